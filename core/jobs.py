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
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core import atomic, checkpoints, history
from core.errors import WorkbenchError
from core.limits import HELD_MODEL_GRACE_SECONDS
from core.ownership import COMMAND_LINE, ModelOwners, Person, refuse_unless_owner
from core.model_folders import free_name, new_model_folder
from core.models import is_valid_local_name

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


class JobRunner:
    """The server's one training job: a child process, followed from a thread of the server.

    Thread-safe: pages read `status()` while the follower thread applies the child's events."""

    def __init__(self, models_dir: str | Path, processes: int = 1) -> None:
        self.models_dir = Path(models_dir)  # where runs save, checkpoint and are recorded
        self.processes = processes  # training processes per job (torchrun above 1)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified at every state change
        self._changes = 0  # counts them, so that a watcher misses none between two looks
        self._status = JobStatus()
        self._process: TrainingProcess | None = None
        self._run_id: str | None = None  # the current run's entry in the run history
        self._queue: list[QueuedRun] = []  # runs asked for while busy, in order; started one by one
        self._queue_notes: dict[str, str] = {}  # owner -> why their queued run could not start
        self._last_of: dict[str, JobStatus] = {}  # owner -> their last run that ended
        self._last_end = 0.0  # when a run last ended (the next in line may start at that instant)
        self.held_model_grace = HELD_MODEL_GRACE_SECONDS  # see _hold_for_the_line
        self._hold_timer: threading.Timer | None = None  # ends a held model's hold while others wait
        self._hold_ends_at = 0.0
        self._saved_for_the_line: TrainingProcess | None = None  # the process whose model it saves

    def status(self) -> JobStatus:
        with self._lock:
            return copy.deepcopy(self._status)

    def start(self, config, model_name: str, person: Person = COMMAND_LINE, queue: bool = False) -> JobStatus:
        """Start training `config` in a child process; it saves as `model_name` when done.
        With `config.checkpoint_every`, the run can be resumed after a crash or restart.
        While another run trains (or waits to be saved), `queue=True` puts it in line (it starts by
        itself in its turn; the returned status says its place); otherwise it is refused."""
        from core.training import check_base_model

        models_dir = self.models_dir
        # Before anything starts: "running", then a failure a minute later, would say less.
        check_base_model(replace(config, models_dir=str(models_dir)))
        with self._lock:
            if queue and (self._busy or self._queue):
                return self._enqueue(config, model_name, person)
            self._refuse_while_busy()
            return self._start_now(config, model_name, person.id)

    def _start_now(self, config, model_name: str, owner: str) -> JobStatus:
        """With the lock held: check the name and the run folder, then launch."""
        models_dir = self.models_dir
        target = new_model_folder(models_dir, model_name)
        run_folder = _run_folder(models_dir, target.name)
        waiting = _interrupted_run(run_folder)
        if waiting:
            raise WorkbenchError(f"An interrupted run of '{waiting.model_name}' can resume from step "
                                 f"{waiting.step}: resume it or discard it first.")
        shutil.rmtree(run_folder, ignore_errors=True)  # leftovers of a run that never checkpointed
        # TensorBoard's event files stay with the models (trackio keeps its own folder).
        tracking_dir = config.tracking_dir or (str(models_dir / TENSORBOARD_FOLDER)
                                               if config.report_to == "tensorboard" else None)
        config = replace(config, output_dir=str(target), models_dir=str(models_dir),
                         checkpoint_dir=str(run_folder) if config.checkpoint_every else None, resume=False,
                         tracking_dir=tracking_dir, run_name=config.run_name or target.name)
        if config.checkpoint_every:
            fields = checkpoints.write_run_record(run_folder, target.name, _record_fields(config),
                                                  server_pid=os.getpid(), owner=owner)
            config = replace(config, train_file=fields["train_file"],
                             validation_file=fields["validation_file"])
        return self._launch(config, target.name, "Loading the model and data, then scoring it before training…",
                            owner)

    @property
    def _busy(self) -> bool:
        return self._status.active or self._status.awaiting_save

    def _enqueue(self, config, model_name: str, person: Person) -> JobStatus:
        """With the lock held: put a run in line, after the checks a start would make now."""
        target = new_model_folder(self.models_dir, model_name)
        if any(queued.model_name == target.name for queued in self._queue) or target.name == self._status.model_name:
            raise WorkbenchError(f"A run that saves as '{target.name}' is already training or in line: choose "
                                 "another name.")
        if person.id and any(queued.owner == person.id for queued in self._queue):
            raise WorkbenchError("You have a run in line already: wait for it, or take it out of the line "
                                 "(Cancel) first.")
        self._queue.append(QueuedRun(config, target.name, person.id))
        self._queue_notes.pop(person.id, None)
        self._hold_for_the_line()
        self._notify()
        return self._queued_status(len(self._queue) - 1) if self._queue else copy.deepcopy(self._status)

    def _queued_status(self, index: int) -> JobStatus:
        queued = self._queue[index]
        return JobStatus(state=QUEUED, model_name=queued.model_name, task=queued.config.task, owner=queued.owner,
                         message=queue_sentence(index, self._status,
                                                self._hold_ends_at - time.time() if self._hold_timer else None))

    def queued_for(self, person: Person) -> JobStatus | None:
        """The person's run in line (its place in the message), or why it could not start; None
        when they have neither."""
        with self._lock:
            for index, queued in enumerate(self._queue):
                if person.id and queued.owner == person.id:
                    return self._queued_status(index)
            note = self._queue_notes.get(person.id) if person.id else None
            return JobStatus(state=FAILED, message=note, owner=person.id) if note else None

    def last_run_of(self, person: Person) -> JobStatus | None:
        """The person's last run that ended (the job shown may already be the next person's)."""
        with self._lock:
            last = self._last_of.get(person.id) if person.id else None
            return copy.deepcopy(last) if last else None

    def last_end(self) -> float:
        """When a run last ended (0: none yet): pages refresh their pickers when it changes."""
        with self._lock:
            return self._last_end

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    def leave_queue(self, person: Person) -> JobStatus:
        """Take the person's run out of the line."""
        with self._lock:
            mine = [queued for queued in self._queue if person.id and queued.owner == person.id]
            if not mine:
                raise WorkbenchError("You have no run in line.")
            self._queue.remove(mine[0])
            self._notify()
            return JobStatus(state=IDLE, model_name=mine[0].model_name, owner=person.id,
                             message=f"Took '{mine[0].model_name}' out of the line: it will not run.")

    def _start_next(self) -> None:
        """With the lock held, once the slot is free: start the first run in line that still can
        (its name may have been taken meanwhile: its owner is told why)."""
        while self._queue and not self._busy:
            queued = self._queue.pop(0)
            try:
                self._start_now(queued.config, queued.model_name, queued.owner)
            except Exception as error:  # noqa: BLE001 - the line must move on; its owner is told why
                reason = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"
                self._queue_notes[queued.owner] = f"Your run in line, '{queued.model_name}', could not start: {reason}"

    def resume(self, model_name: str, person: Person = COMMAND_LINE) -> JobStatus:
        """Continue an interrupted run from its newest checkpoint."""
        from core.training import TrainConfig

        models_dir = self.models_dir
        run_folder = _run_folder(models_dir, model_name)
        with self._lock:
            self._refuse_while_busy()
            waiting = _interrupted_run(run_folder)
            if not waiting:
                raise WorkbenchError(f"There is no interrupted run of '{model_name}' to resume.")
            record = checkpoints.read_run_record(run_folder)
            owner = record.get("owner", "")  # a run recorded before owners were kept: the admin's
            refuse_unless_owner(person, owner, f"The interrupted run of '{model_name}'", "resume")
            target = new_model_folder(models_dir, waiting.model_name)
            fields = _upgraded_record(record["config"])
            config = TrainConfig(**{**fields, "output_dir": str(target), "models_dir": str(models_dir),
                                    "checkpoint_dir": str(run_folder), "resume": True})
            return self._launch(config, waiting.model_name,
                                f"Resuming from the checkpoint at step {waiting.step} of {waiting.total_steps}…",
                                owner)

    def interrupted_runs(self) -> list[InterruptedRun]:
        """Runs that can resume, except the one training now."""
        root = Path(self.models_dir) / CHECKPOINTS_FOLDER
        if not root.is_dir():
            return []
        with self._lock:
            in_use = self._busy
            busy = {self._status.model_name, self._process.run_name} if in_use else set()
        runs = [_interrupted_run(folder) for folder in sorted(root.iterdir()) if folder.name not in busy]
        return [run for run in runs if run]

    def discard_interrupted(self, model_name: str, person: Person = COMMAND_LINE) -> None:
        run_folder = _run_folder(self.models_dir, model_name)
        if not _interrupted_run(run_folder):
            raise WorkbenchError(f"There is no interrupted run of '{model_name}' to discard.")
        refuse_unless_owner(person, checkpoints.read_run_record(run_folder).get("owner", ""),
                            f"The interrupted run of '{model_name}'", "discard")
        with self._lock:
            if self._status.active and self._status.model_name == model_name:
                raise WorkbenchError(f"'{model_name}' is training now: cancel it instead.")
        shutil.rmtree(run_folder, ignore_errors=True)

    def use_of(self, model_name: str) -> str | None:
        """How the job uses the model folder `model_name` now (it saves to it, or trains from
        it), for a person; None when it does not."""
        with self._lock:
            if not self._busy:
                return None
            if self._status.model_name == model_name:
                return f"the current run saves to '{model_name}'"
            if self._process and self._process.config.base_model == model_name:
                return f"the current run fine-tunes '{model_name}'"
        return None

    def check_can_start(self) -> None:
        """Raise WorkbenchError saying why if a new run cannot start now (one runs, or a trained
        model waits to be saved): callers check this before any slow preparation."""
        with self._lock:
            self._refuse_while_busy()

    def cancel(self, person: Person = COMMAND_LINE) -> JobStatus:
        with self._lock:
            if not self._status.active or self._status.state == SAVING:
                raise WorkbenchError("No training is running.")
            refuse_unless_owner(person, self._status.owner, f"The run of '{self._status.model_name}'", "cancel")
            self._status.state = STOPPING
            self._status.message = "Stopping after the current step…"
            self._process.control.request_stop()
            self._notify()
            return copy.deepcopy(self._status)

    def save_pending(self, model_name: str | None = None, person: Person = COMMAND_LINE) -> JobStatus:
        """Ask the training process to save the model it holds after a cancel or a failed save,
        as `model_name` (default: the name the run was started with); it saves in the
        background. A failed save keeps the model waiting, with the reason."""
        with self._lock:
            if not self._status.awaiting_save:
                raise WorkbenchError("There is no trained model waiting to be saved.")
            refuse_unless_owner(person, self._status.owner, f"The run of '{self._status.model_name}'", "save")
            name = (model_name or "").strip() or self._status.model_name
            target = new_model_folder(self.models_dir, name)  # a bad or taken name: refused
            self._cancel_hold()  # its owner is here (a failed save holds it again)
            self._status.state, self._status.model_name = SAVING, target.name
            self._status.message = f"Saving as '{target.name}'…"
            self._process.control.send("save", output_dir=str(target))
            self._notify()
            return copy.deepcopy(self._status)

    def discard_pending(self, person: Person = COMMAND_LINE) -> JobStatus:
        """Drop the model waiting after a cancel or a failed save, with its checkpoints."""
        with self._lock:
            if not self._status.awaiting_save:
                raise WorkbenchError("There is no trained model waiting to be saved or discarded.")
            refuse_unless_owner(person, self._status.owner, f"The run of '{self._status.model_name}'", "discard")
            return self._discard_held("Discarded the trained model.")

    def _discard_held(self, message: str) -> JobStatus:
        """With the lock held: drop the held model and free the slot for the next in line."""
        self._cancel_hold()
        try:
            self._process.control.send("discard")
        except OSError:  # the command cannot be written (a full disk): the process goes without it
            self._process.child.kill()
        shutil.rmtree(_run_folder(self.models_dir, self._process.run_name), ignore_errors=True)
        self._status.state = IDLE
        self._status.message = message
        self._record_end(DISCARDED)
        discarded = copy.deepcopy(self._status)
        self._start_next()
        self._notify()
        return discarded

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job is no longer busy (done, failed, or waiting to be saved)."""
        return self.wait_until(lambda status: not status.active, timeout)

    def changes(self) -> int:
        """How many times the job's state (or its line) has changed so far."""
        with self._lock:
            return self._changes

    def wait_for_change(self, seen: int, timeout: float | None = None) -> int:
        """Block until the job has changed since `changes()` returned `seen` (or the timeout
        passes); returns the count now."""
        with self._changed:
            self._changed.wait_for(lambda: self._changes != seen, timeout)
            return self._changes

    def _notify(self) -> None:
        """With the lock held: wake whoever waits on a change."""
        self._changes += 1
        self._changed.notify_all()

    def wait_until(self, condition, timeout: float | None = None) -> JobStatus:
        """Block until `condition(status)` holds (woken at each change, never polling), or the
        timeout passes; returns the status then."""
        with self._changed:
            self._changed.wait_for(lambda: condition(self._status), timeout)
            return copy.deepcopy(self._status)

    def training_pid(self) -> int | None:
        """The process id of the running job's training process (what an operator would kill)."""
        with self._lock:
            child = self._process.child if self._process else None
            return child.pid if child and child.poll() is None else None

    # ----- the training process -----------------------------------------------------------------
    def _refuse_while_busy(self) -> None:
        if self._status.active:
            progress = self._status.progress
            where = f" (step {progress.step}/{progress.total_steps})" if progress and progress.total_steps else ""
            raise WorkbenchError(
                f"Busy: '{self._status.model_name}' is training{where}. Wait for it to finish "
                f"or cancel it first.")
        if self._status.awaiting_save:
            what = "A cancelled run" if self._status.state == CANCELLED else "A trained model that could not be saved"
            raise WorkbenchError(f"{what} of '{self._status.model_name}' waits: save it or discard it first.")

    def _launch(self, config, model_name: str, message: str, owner: str = "") -> JobStatus:
        """With the lock held: start the training process and a thread that follows it."""
        self._status = JobStatus(state=RUNNING, model_name=model_name, task=config.task, message=message,
                                 owner=owner, started_at=time.time())
        self._queue_notes.pop(owner, None)
        self._process = TrainingProcess(config, model_name, self.processes)
        self._run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}-{model_name}"
        # The follower thread starts the process too: Linux sends the parent-death signal when
        # the *thread* that started a child ends, and this one lives exactly as long as the child
        # (a web request's thread may end any time).
        threading.Thread(target=self._follow, args=(self._process,), daemon=True, name="finetune-job").start()
        self._notify()
        return copy.deepcopy(self._status)

    def _follow(self, process: "TrainingProcess") -> None:
        try:
            process.start()
        except OSError as error:
            with self._lock:
                self._fail(process, f"The training process could not start: {error}")
                self._notify()
            process.clean_up()
            return
        process.take_cores()
        try:
            for event in process.events():
                if event.get("event") == "trained":
                    process.give_cores_back()  # a held model waits without computing
                with self._lock:
                    if process is self._process:  # an older process finishing after a discard: ignored
                        self._apply(process, event)
                        self._notify()
            code = process.wait()
        finally:
            process.give_cores_back()
        with self._lock:
            if process is self._process and self._busy:
                # It ended without saying how: killed (out of memory, kill -9) or crashed.
                self._fail(process, f"{process.describe_exit(code)} {self._lost_what()}")
            self._notify()
        process.clean_up()

    def _apply(self, process: "TrainingProcess", event: dict) -> None:
        from core.training import Progress

        kind = event.pop("event")
        if kind == "progress":
            self._on_progress(Progress(**event))
        elif kind == "trained":
            process.result = event
            self._status.metrics_before, self._status.metrics_after = event["metrics_before"], event["metrics_after"]
            self._status.warnings = list(event["warnings"])
            if event["stopped"]:
                self._finish(CANCELLED, f"Cancelled after step {event['steps']} of {event['total_steps']}: "
                                        "save what was trained, or discard it.")
        elif kind == "saving":
            self._status.state = SAVING
            self._status.message = f"Saving as '{Path(event['output_dir']).name}'…"
        elif kind == "saved":
            shutil.rmtree(_run_folder(self.models_dir, process.run_name), ignore_errors=True)
            ModelOwners(self.models_dir).claim(Path(event["output_dir"]).name, self._status.owner)
            from core.training import tracking_hint

            message = _saved_message(process.result, Path(event["output_dir"]).name)
            if process is self._saved_for_the_line:
                message += " It was saved for you while others waited to train: delete it if you do not want it."
            self._finish(FINISHED, " ".join(filter(None, (message, tracking_hint(process.config)))))
        elif kind == "save_failed":
            self._finish(SAVE_FAILED, f"Could not save '{Path(event['output_dir']).name}': {event['reason']} The "
                                      "trained model is kept: fix the cause and save again (under another name if "
                                      "you like), or discard it.")
        elif kind == "failed":
            self._fail(process, event["reason"])

    def _fail(self, process: "TrainingProcess", reason: str) -> None:
        if not checkpoints.latest_checkpoint(process.config.checkpoint_dir):
            # Nothing to resume from: the run record and its copy of the uploads go too.
            shutil.rmtree(_run_folder(self.models_dir, process.run_name), ignore_errors=True)
        self._finish(FAILED, reason + _resumable_note(process.config))

    def _lost_what(self) -> str:
        if self._status.awaiting_save:
            return "The model it held was not saved."
        return "Nothing was saved." if self._status.state != SAVING else "The model was not saved (no half-written " \
                                                                          "model is left)."

    def _on_progress(self, progress) -> None:
        self._status.progress = progress
        if progress.warnings:
            self._status.warnings = list(progress.warnings)
        if progress.phase == "training":
            self._status.last_training_step = progress
        if progress.phase == "training" and progress.loss is not None:
            self._status.loss_curve.append({"step": progress.step, "loss": float(progress.loss), "series": "train"})
        # One validation point per evaluation ("evaluating-after" repeats the kept one's metrics).
        if progress.eval_metrics and "loss" in progress.eval_metrics and progress.phase != "evaluating-after":
            self._status.loss_curve.append(
                {"step": progress.step, "loss": float(progress.eval_metrics["loss"]), "series": "validation"})
            if progress.phase == "evaluating-before":
                self._status.metrics_before = dict(progress.eval_metrics)
        if self._status.state == RUNNING:
            self._status.message = describe_progress(progress)

    def _finish(self, state: str, message: str) -> None:
        self._status.state = state
        self._status.message = message
        self._status.finished_at = time.time()
        self._record_end(state)
        if state in (FINISHED, FAILED):  # the slot is free (a cancelled run waits for save or discard)
            self._start_next()
        else:
            self._hold_for_the_line()

    def _record_end(self, state: str) -> None:
        """With the lock held: the run's end in the run history, and as its owner's last run."""
        self._last_end = time.time()
        self._record_run(state)
        if self._status.owner:
            self._last_of[self._status.owner] = copy.deepcopy(self._status)

    def _hold_for_the_line(self) -> None:
        """With the lock held: when a held model (after a cancel or a failed save) keeps others
        waiting, give its owner `held_model_grace` seconds to save or discard it; then it is
        saved for them (their page and last-run status say so)."""
        if not self._status.awaiting_save:
            return
        if self._saved_for_the_line is self._process:  # the save made for the line failed
            self._saved_for_the_line = None  # one try per hold: with nobody waiting now, held as before
            if self._queue:
                self._discard_held(f"{self._status.message.split(' The trained model is kept')[0]} Others were "
                                   "waiting to train, so the trained model was discarded.")
                return
        if not self._queue or self._hold_timer:
            return
        # Everyone reads the job's status, so it speaks of the owner, not to them.
        self._status.message += (f" Others are waiting to train: unless it is saved or discarded within "
                                 f"{_duration(self.held_model_grace)}, it is saved for the person who started it.")
        self._hold_ends_at = time.time() + self.held_model_grace
        # The timer acts only while it is still this hold's: one that fired as the hold ended
        # (cancel() cannot stop it then) finds another timer, or none, and does nothing.
        timer = threading.Timer(self.held_model_grace, lambda: self._end_hold(timer))
        timer.daemon = True
        self._hold_timer = timer
        timer.start()

    def _end_hold(self, timer: threading.Timer) -> None:
        """The held model's time is up: save it under its name (or the next free one); if even
        the command cannot be given (a full disk), drop it so that the line moves on."""
        with self._lock:
            if self._hold_timer is not timer:
                return
            self._hold_timer = None
            if not (self._status.awaiting_save and self._queue):
                return
            try:
                name = free_name(self.models_dir, self._status.model_name)
                self._process.control.send("save", output_dir=str(new_model_folder(self.models_dir, name)))
            except (OSError, WorkbenchError) as error:
                self._discard_held(f"It could not be saved for its owner ({error}) while others waited to train: "
                                   "the trained model was discarded.")
                return
            self._saved_for_the_line = self._process
            self._status.state, self._status.model_name = SAVING, name
            self._status.message = (f"Nobody saved or discarded it within {_duration(self.held_model_grace)} while "
                                    f"others waited: saving it as '{name}' for its owner…")
            self._notify()

    def _cancel_hold(self) -> None:
        if self._hold_timer:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _record_run(self, state: str) -> None:
        """With the lock held: write the run's entry in the models folder's run history. A
        history that cannot be written (disk full) never fails the run itself."""
        status, process = self._status, self._process
        try:
            history.RunHistory(self.models_dir).record(history.run_entry(
                self._run_id, process.config, process.run_name, state, status.message, status.started_at,
                status.finished_at or time.time(), process.result, status.loss_curve, status.metrics_before,
                status.metrics_after, saved_as=status.model_name if state == FINISHED else None, owner=status.owner))
        except OSError as error:
            self._status.warnings.append(f"The run history could not be written: {error}")


def queue_sentence(ahead: int, current: JobStatus, hold_left: float | None = None) -> str:
    """What a person whose run is in line reads: their place, and what holds the slot (a held
    model for at most `hold_left` seconds more)."""
    place = "next" if ahead == 0 else f"in line, {ahead} ahead of you"
    progress = current.progress
    where = f", step {progress.step} of {progress.total_steps}" if progress and progress.total_steps else ""
    if current.active:
        eta = getattr(progress, "eta_seconds", None)
        left = f", about {_duration(eta)} left" if eta is not None and current.state == RUNNING else ""
        holding = f"'{current.model_name}' is training{where}{left}"
    elif current.awaiting_save:
        holding = f"a trained '{current.model_name}' waits to be saved or discarded"
        if hold_left is not None:
            holding += f", for at most {_duration(max(1.0, hold_left))} more"
    else:
        holding = "a run is starting"
    return (f"Queued: your run is {place} ({holding}; one training runs at a time on this server). It starts "
            "by itself; you can leave this page and come back.")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _saved_message(result: dict | None, name: str) -> str:
    result = result or {}
    if result.get("stopped"):
        return (f"Saved the partly trained model as '{name}' (step {result.get('steps')} of "
                f"{result.get('total_steps')}).")
    resumed = f" (resumed from step {result['resumed_from_step']})" if result.get("resumed_from_step") else ""
    precision = {"bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision"}.get(result.get("precision"),
                                                                                    "float32")
    done = f"Done: saved as '{name}'{resumed}; trained in {precision}."
    kept = result.get("kept")
    if result.get("early_stopped"):
        done += f" Early stopping ended it after {kept['evaluations']} evaluations."
    if kept:  # which weights were saved, also when they are the last ones
        from core.training import kept_sentence

        done += " " + kept_sentence(kept)
    return done


class TrainingProcess:
    """One job's child process: `python -m core.training` (under torchrun for several
    processes) with the job's settings in a folder of its own, events read from its stdout, a
    control folder for stop and save commands (core/control.py), and its stderr kept for the
    reason it failed. The child dies with the server (Linux: the parent-death signal), so a
    killed server never leaves it training on."""

    def __init__(self, config, run_name: str, processes: int = 1, cores: int | None = None) -> None:
        """`cores`: the machine's usable cores (the model thread's count unless a test gives one)."""
        import json
        import subprocess
        import tempfile

        from core.control import ControlFolder
        from core.cpu_threads import threads_set_by_person, training_threads
        from core.threads import MODEL_THREAD

        self.config, self.run_name, self.result = config, run_name, None
        self.folder = Path(tempfile.mkdtemp(prefix="workbench-job-"))
        (self.folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)), encoding="utf-8")
        self.control = ControlFolder(self.folder / "control")  # ready before the child: Cancel may come first
        self._stderr = open(self.folder / "stderr.log", "w+", encoding="utf-8")
        # Each process's threads: the cores less one kept for the server (core/cpu_threads.py).
        cores = cores or MODEL_THREAD.cores
        self.threads_each = None if threads_set_by_person() else training_threads(cores, processes)
        self.threads = (self.threads_each or 0) * processes
        self._holds_cores = False
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else []
        self._command = [*launcher, "-m", "core.training", "--config", str(self.folder / "config.json"),
                         "--report-json", "--control-dir", str(self.control.path), "--hold-until-saved"]
        self.child: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the child; call it from the thread that follows it (see JobRunner._launch)."""
        import subprocess
        import sys

        self.child = subprocess.Popen(
            [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *self._command],
            cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, encoding="utf-8", env=self.environment())

    def take_cores(self) -> None:
        """While it trains, the server's model work uses only the cores it leaves."""
        from core.threads import MODEL_THREAD

        MODEL_THREAD.training_started(self.threads)
        self._holds_cores = True

    def give_cores_back(self) -> None:
        from core.threads import MODEL_THREAD

        if self._holds_cores:
            self._holds_cores = False
            MODEL_THREAD.training_ended(self.threads)

    def environment(self) -> dict[str, str]:
        threads = {"OMP_NUM_THREADS": str(self.threads_each)} if self.threads_each else {}
        return {**os.environ, "PYTHONUNBUFFERED": "1", **threads}

    def events(self):
        from core.control import parse_event

        for line in self.child.stdout:
            event = parse_event(line.rstrip("\n"))
            if event is not None:
                yield event

    def wait(self) -> int:
        return self.child.wait()

    def describe_exit(self, code: int) -> str:
        """Why the process ended without saying so, for a person."""
        import signal

        if code < 0:
            name = signal.Signals(-code).name
            why = " (out of memory, or stopped from outside)" if -code == signal.SIGKILL else ""
            return f"The training process was killed by {name}{why}."
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
        last = f": {lines[-1][:300]}" if lines else ""
        return f"The training process ended unexpectedly (exit code {code}){last}."

    def clean_up(self) -> None:
        self._stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


# Run first in the child: Linux kills it when the server dies (the parent-death signal survives
# the exec; it is sent when the thread that started the child ends, so that thread is the one
# that follows it), so a killed server never leaves a run training on; then it becomes the
# training process. (Workers under torchrun notice their launcher is gone: StopRequest.)
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(3)  # the server died before this line
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def remove_interrupted_saves(models_dir) -> list[str]:
    """Delete the hidden folders of saves cut off by a crash (kill -9, power loss; core/atomic.py
    names them); the registry never lists them, this only frees the disk. Returns what was removed."""
    removed = []
    # (and the deletions cut off after their rename, see core/model_folders.py)
    for folder, pid in [*atomic.leftovers(models_dir, "saving"), *atomic.leftovers(models_dir, "deleting")]:
        if not _process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def remove_stale_runs(models_dir) -> list[str]:
    """Delete run folders in `<models>/.checkpoints/` that no run can use: no run record or no
    complete checkpoint (the run failed or was cut off before its first one), or a model already
    saved under the run's name (cut off after its save). Runs of a server that is still alive
    are left alone. Returns the names removed."""
    root = Path(models_dir) / CHECKPOINTS_FOLDER
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        record = checkpoints.read_run_record(folder)
        owner = (record or {}).get("server_pid")
        if owner and owner != os.getpid() and _process_alive(int(owner)):
            continue
        saved = record and (Path(models_dir) / record["model_name"]).exists()
        if not record or not checkpoints.latest_checkpoint(folder) or saved:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_progress(progress, with_eta: bool = True) -> str:
    """One line a person reads: step, loss, learning rate, speed, time left."""
    if progress.phase != "training":
        return progress.phase.replace("-", " ").capitalize() + "…"
    parts = [f"Step {progress.step}/{progress.total_steps}"]
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.learning_rate is not None:
        parts.append(f"lr {progress.learning_rate:.2e}")
    if progress.samples_per_second:
        parts.append(f"{progress.samples_per_second:.1f} samples/s")
    if with_eta and progress.eta_seconds is not None:
        parts.append(f"ETA {progress.eta_seconds:.0f} s")
    return " · ".join(parts)


def _run_folder(models_dir, model_name: str) -> Path:
    if not is_valid_local_name(model_name):
        raise WorkbenchError(f"'{model_name}' is not a valid model name.")
    return Path(models_dir) / CHECKPOINTS_FOLDER / model_name


def _interrupted_run(run_folder: Path) -> InterruptedRun | None:
    record = checkpoints.read_run_record(run_folder)
    latest = checkpoints.latest_checkpoint(run_folder)
    if not record or not latest or (run_folder.parent.parent / record["model_name"]).exists():
        return None  # nothing to resume (remove_stale_runs clears such folders at start)
    state = checkpoints.read_state(latest[1])
    return InterruptedRun(record["model_name"], state["step"], state["total_steps"])


def _record_fields(config) -> dict:
    """The settings a resumed run needs (where it saves and looks models up is decided anew)."""
    fields = dataclasses.asdict(config)
    for key in ("output_dir", "models_dir", "checkpoint_dir", "resume"):
        fields.pop(key)
    return fields


def _upgraded_record(fields: dict) -> dict:
    """A run record written by an earlier version, in today's TrainConfig fields."""
    fields = dict(fields)
    if "bf16" in fields:  # became `precision`
        fields["precision"] = {True: "bf16", False: "fp32"}.get(fields.pop("bf16"), "auto")
    return fields


def _resumable_note(config) -> str:
    latest = checkpoints.latest_checkpoint(config.checkpoint_dir)
    return f" It can resume from its checkpoint at step {latest[0]}." if latest else ""
