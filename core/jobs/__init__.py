"""The one fine-tuning job a server runs at a time, outside any web request and outside the
server's process.

What runs where: the job is a child process running the same entry point as the command line
(`python -m core.training`, under torchrun for several processes), so the server's memory, its
torch random state (seeded generation stays reproducible during a run), Accelerate's
one-per-process state and its OpenMP pools never see training. A thread of the server follows
the child's events (core/control.py) into a status every page can read, so closing or
refreshing the page does not stop the job and any page can re-attach. Cancel asks the child to
stop at its next step. After a cancel, or when the save fails (disk full, the name taken
meanwhile), the child keeps the trained model until the person saves it (under the same or
another name) or discards it; while others wait in line it holds the slot for
HELD_MODEL_GRACE_SECONDS, then it is saved for its owner (a second failed save discards it), so an
owner who left does not stop the class. A child that crashes or is killed (out of memory, kill -9) is
reported with its reason; saves are atomic, so it leaves no half-written model.

A run that checkpoints keeps its settings, uploads and checkpoints in
`<models dir>/.checkpoints/<name>/` (a dot-folder, so no picker lists it). If the server dies
mid-run, that folder survives, and the next server offers to resume the run from it. A run
folder that cannot be resumed (the run failed before its first checkpoint, or its model was
saved) is removed when the run ends, or when the next server starts (`remove_stale_runs`).

A single-process run is forked from the server's fork server (core/jobs/forkserver.py), which
imported torch and transformers once; a run it cannot serve is spawned.
"""

from core.jobs.cleanup import remove_interrupted_saves, remove_stale_runs
from core.jobs.forkserver import ForkServer
from core.jobs.messages import describe_progress, queue_sentence
from core.jobs.process import TrainingProcess
from core.jobs.runner import JobRunner
from core.jobs.status import (AWAITING_SAVE, CANCELLED, CHECKPOINTS_FOLDER, DISCARDED, FAILED, FINISHED, IDLE,
                              QUEUED, RUNNING, SAVE_FAILED, SAVING, STOPPING, TENSORBOARD_FOLDER, InterruptedRun,
                              JobStatus, QueuedRun)

__all__ = ["AWAITING_SAVE", "CANCELLED", "CHECKPOINTS_FOLDER", "DISCARDED", "FAILED", "FINISHED", "IDLE", "ForkServer",
           "QUEUED", "RUNNING", "SAVE_FAILED", "SAVING", "STOPPING", "TENSORBOARD_FOLDER", "InterruptedRun",
           "JobRunner", "JobStatus", "QueuedRun", "TrainingProcess", "describe_progress", "queue_sentence",
           "remove_interrupted_saves", "remove_stale_runs"]
