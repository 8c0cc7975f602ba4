"""JobRunner: the one training slot of a server, its line of waiting runs, and the thread that
follows each run's child process (core/jobs/process.py) into a status every page can read."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from core import checkpoints
from core.errors import WorkbenchError
from core.history import RunHistory, run_entry
from core.jobs.messages import describe_progress, duration, queue_sentence, saved_message
from core.jobs.forkserver import ForkServer
from core.jobs.process import TrainingProcess
from core.jobs.status import (CANCELLED, CHECKPOINTS_FOLDER, DISCARDED, FAILED, FINISHED, IDLE,
                              QUEUED, RUNNING, SAVE_FAILED, SAVING, STOPPING, TENSORBOARD_FOLDER, InterruptedRun,
                              JobStatus, QueuedRun)
from core.limits import HELD_MODEL_GRACE_SECONDS
from core.ownership import COMMAND_LINE, ModelOwners, Person, refuse_unless_owner
from core.model_folders import free_name, new_model_folder
from core.models import is_valid_local_name


class JobRunner:
    """The server's one training job: a child process, followed from a thread of the server.

    Thread-safe: pages read `status()` while the follower thread applies the child's events."""

    def __init__(self, models_dir: str | Path, processes: int = 1, history: RunHistory | None = None,
                 forkserver: ForkServer | None = None) -> None:
        self.models_dir = Path(models_dir)  # where runs save, checkpoint and are recorded
        self.forkserver = forkserver  # forks runs with their imports done; None: each run is spawned
        self.history = history or RunHistory(self.models_dir)  # the server's, shared with its pages
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
        self._interrupted: tuple[int, list[InterruptedRun]] | None = None  # (at which change, the runs)
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
        """Runs that can resume, except the one training now. Read from the disk once per change
        of the job (a run ended, one was discarded): every open page asks at each tick."""
        with self._lock:
            if self._interrupted and self._interrupted[0] == self._changes:
                return list(self._interrupted[1])
            seen_at = self._changes
            busy = {self._status.model_name, self._process.run_name} if self._busy else set()
        root = Path(self.models_dir) / CHECKPOINTS_FOLDER
        folders = sorted(root.iterdir()) if root.is_dir() else []
        runs = [run for run in (_interrupted_run(folder) for folder in folders if folder.name not in busy) if run]
        with self._lock:
            self._interrupted = (seen_at, runs)
        return list(runs)

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
        with self._lock:
            self._notify()  # the list of interrupted runs changed

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
            process.start(self.forkserver)
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
        if kind == "started":
            self._status.threads = event["threads"]
        elif kind == "progress":
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

            message = saved_message(process.result, Path(event["output_dir"]).name)
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
                                 f"{duration(self.held_model_grace)}, it is saved for the person who started it.")
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
            self._status.message = (f"Nobody saved or discarded it within {duration(self.held_model_grace)} while "
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
            self.history.record(run_entry(
                self._run_id, process.config, process.run_name, state, status.message, status.started_at,
                status.finished_at or time.time(), process.result, status.loss_curve, status.metrics_before,
                status.metrics_after, saved_as=status.model_name if state == FINISHED else None, owner=status.owner))
        except OSError as error:
            self._status.warnings.append(f"The run history could not be written: {error}")


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
