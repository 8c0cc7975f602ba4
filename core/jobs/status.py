"""What a page reads about the training job: its states, the status snapshot, a queued run
and an interrupted run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CHECKPOINTS_FOLDER = ".checkpoints"  # inside the models directory
TENSORBOARD_FOLDER = ".tensorboard"  # inside the models directory: runs logged to TensorBoard

IDLE, RUNNING, STOPPING, SAVING, CANCELLED, SAVE_FAILED, FINISHED, FAILED = (
    "idle", "running", "stopping", "saving", "cancelled", "save failed", "finished", "failed")
DISCARDED = "discarded"  # in the run history only: a trained model dropped after a cancel or failed save
AWAITING_SAVE = (CANCELLED, SAVE_FAILED)  # a trained model waits in memory: save it or discard it
QUEUED = "queued"  # a run asked for while another trains: it starts by itself in its turn


@dataclass
class QueuedRun:
    """A run waiting for the one training slot, with who asked for it."""

    config: Any
    model_name: str
    owner: str  # core.ownership.Person.id
    queued_at: float = field(default_factory=time.time)


@dataclass
class InterruptedRun:
    """A run that stopped without ending (crash, restart) and can resume from a checkpoint."""

    model_name: str
    step: int
    total_steps: int

    @property
    def label(self) -> str:
        return f"{self.model_name}: stopped at step {self.step} of {self.total_steps}"


@dataclass
class JobStatus:
    """A snapshot of the job, safe to read while it runs."""

    state: str = IDLE
    model_name: str | None = None  # the folder name it saves to in the models directory
    task: str | None = None
    progress: Any = None  # the latest core.training.Progress
    last_training_step: Any = None  # the latest Progress of the training phase, kept after the end
    loss_curve: list[dict] = field(default_factory=list)  # {"step", "loss", "series"}
    metrics_before: dict | None = None
    metrics_after: dict | None = None
    warnings: list[str] = field(default_factory=list)
    message: str = ""  # what happened last, for a person
    owner: str = ""  # who started it (core.ownership.Person.id; "" the command line)
    started_at: float | None = None
    finished_at: float | None = None
    threads: int | None = None  # the CPU threads its training process computes with (it says so)

    @property
    def active(self) -> bool:
        return self.state in (RUNNING, STOPPING, SAVING)

    @property
    def awaiting_save(self) -> bool:
        return self.state in AWAITING_SAVE

    def summary(self) -> dict:
        """The status as plain data, for API clients."""
        step = self.progress if self.active else self.last_training_step or self.progress
        return {"state": self.state, "model_name": self.model_name, "task": self.task, "message": self.message,
                "phase": getattr(self.progress, "phase", None), "step": getattr(step, "step", 0),
                "total_steps": getattr(step, "total_steps", 0), "loss_curve": list(self.loss_curve),
                "metrics_before": self.metrics_before, "metrics_after": self.metrics_after,
                "warnings": list(self.warnings), "started_at": self.started_at, "finished_at": self.finished_at}
