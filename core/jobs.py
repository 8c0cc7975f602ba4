"""The one fine-tuning job a server runs at a time, outside any web request.

The job runs in its own thread, so closing or refreshing the page does not stop it; any page
can read its live status and re-attach. After a cancel, the partly trained model is kept in
memory until the person chooses to save or discard it.

A run that checkpoints keeps its settings, uploads and checkpoints in
`<models dir>/.checkpoints/<name>/` (a dot-folder, so no picker lists it). If the server dies
mid-run, that folder survives, and the next server offers to resume the run from it.
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

from core import checkpoints
from core.data import CAUSAL_LM, CLASSIFICATION, MASKED_LM
from core.errors import WorkbenchError
from core.models import (
    FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelChoice, get_registry, is_valid_local_name,
    packaged_choice,
)
from core.threads import run_in_own_thread

# Which panel shows a model fine-tuned for each training task.
PANEL_TASK = {CLASSIFICATION: TEXT_CLASSIFICATION, CAUSAL_LM: TEXT_GENERATION, MASKED_LM: FILL_MASK}
# Encoders that take a new classification head well, for users who have the Hub.
CLASSIFICATION_HUB_BASES = ("distilbert/distilbert-base-uncased", "google-bert/bert-base-uncased")

CHECKPOINTS_FOLDER = ".checkpoints"  # inside the models directory

IDLE, RUNNING, STOPPING, CANCELLED, FINISHED, FAILED = (
    "idle", "running", "stopping", "cancelled", "finished", "failed")


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
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in (RUNNING, STOPPING)


class JobRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._stop = threading.Event()
        self._pending = None  # TrainResult of a cancelled run, until saved or discarded
        self._thread: threading.Thread | None = None

    def status(self) -> JobStatus:
        with self._lock:
            return copy.deepcopy(self._status)

    def start(self, config, model_name: str, data=None) -> JobStatus:
        """Start training `config` in the background; it saves as `model_name` when done.
        `data`: the uploads already loaded and checked (else train() loads them).
        With `config.checkpoint_every`, the run can be resumed after a crash or restart."""
        models_dir = get_registry().models_dir
        target = _target_folder(models_dir, model_name)
        run_folder = _run_folder(models_dir, target.name)
        with self._lock:
            self._refuse_while_busy()
            waiting = _interrupted_run(run_folder)
            if waiting:
                raise WorkbenchError(f"An interrupted run of '{waiting.model_name}' can resume from step "
                                     f"{waiting.step}: resume it or discard it first.")
            shutil.rmtree(run_folder, ignore_errors=True)  # leftovers of a run that never checkpointed
            config = replace(config, output_dir=str(target), models_dir=str(models_dir),
                             checkpoint_dir=str(run_folder) if config.checkpoint_every else None, resume=False)
            if config.checkpoint_every:
                fields = checkpoints.write_run_record(run_folder, target.name, _record_fields(config))
                config = replace(config, train_file=fields["train_file"],
                                 validation_file=fields["validation_file"])
            return self._launch(config, target.name, data,
                                "Loading the model and data, then scoring it before training…")

    def resume(self, model_name: str) -> JobStatus:
        """Continue an interrupted run from its newest checkpoint."""
        from core.training import TrainConfig

        models_dir = get_registry().models_dir
        run_folder = _run_folder(models_dir, model_name)
        with self._lock:
            self._refuse_while_busy()
            waiting = _interrupted_run(run_folder)
            if not waiting:
                raise WorkbenchError(f"There is no interrupted run of '{model_name}' to resume.")
            target = _target_folder(models_dir, waiting.model_name)
            fields = checkpoints.read_run_record(run_folder)["config"]
            config = TrainConfig(**{**fields, "output_dir": str(target), "models_dir": str(models_dir),
                                    "checkpoint_dir": str(run_folder), "resume": True})
            return self._launch(config, waiting.model_name, None,
                                f"Resuming from the checkpoint at step {waiting.step} of "
                                f"{waiting.total_steps}…")

    def interrupted_runs(self) -> list[InterruptedRun]:
        """Runs that can resume, except the one training now."""
        root = Path(get_registry().models_dir) / CHECKPOINTS_FOLDER
        if not root.is_dir():
            return []
        with self._lock:
            busy = self._status.model_name if self._status.active or self._status.state == CANCELLED else None
        runs = [_interrupted_run(folder) for folder in sorted(root.iterdir()) if folder.name != busy]
        return [run for run in runs if run]

    def discard_interrupted(self, model_name: str) -> None:
        run_folder = _run_folder(get_registry().models_dir, model_name)
        if not _interrupted_run(run_folder):
            raise WorkbenchError(f"There is no interrupted run of '{model_name}' to discard.")
        with self._lock:
            if self._status.active and self._status.model_name == model_name:
                raise WorkbenchError(f"'{model_name}' is training now: cancel it instead.")
        shutil.rmtree(run_folder, ignore_errors=True)

    def _refuse_while_busy(self) -> None:
        if self._status.active:
            progress = self._status.progress
            where = f" (step {progress.step}/{progress.total_steps})" if progress else ""
            raise WorkbenchError(
                f"Busy: '{self._status.model_name}' is training{where}. Wait for it to finish "
                f"or cancel it first.")
        if self._status.state == CANCELLED:
            raise WorkbenchError(
                f"A cancelled run of '{self._status.model_name}' waits: save it or discard it first.")

    def _launch(self, config, model_name: str, data, message: str) -> JobStatus:
        self._stop.clear()
        self._pending = None
        self._status = JobStatus(state=RUNNING, model_name=model_name, task=config.task, message=message,
                                 started_at=time.time())
        self._thread = threading.Thread(target=self._run, args=(config, data), daemon=True,
                                        name="finetune-job")
        self._thread.start()
        return copy.deepcopy(self._status)

    def cancel(self) -> JobStatus:
        with self._lock:
            if not self._status.active:
                raise WorkbenchError("No training is running.")
            self._status.state = STOPPING
            self._status.message = "Stopping after the current step…"
        self._stop.set()
        return self.status()

    def save_cancelled(self) -> JobStatus:
        from core.training import save_model

        with self._lock:
            if self._status.state != CANCELLED or self._pending is None:
                raise WorkbenchError("There is no cancelled run to save.")
            result, name = self._pending, self._status.model_name
        models_dir = get_registry().models_dir
        target = _target_folder(models_dir, name)
        run_in_own_thread(lambda: save_model(result, target), name="save-model")  # why: core/threads.py
        shutil.rmtree(_run_folder(models_dir, name), ignore_errors=True)
        with self._lock:
            self._pending = None
            self._status.state = FINISHED
            self._status.message = f"Saved the partly trained model as '{name}'."
        return self.status()

    def discard_cancelled(self) -> JobStatus:
        with self._lock:
            if self._status.state != CANCELLED:
                raise WorkbenchError("There is no cancelled run to discard.")
            shutil.rmtree(_run_folder(get_registry().models_dir, self._status.model_name), ignore_errors=True)
            self._pending = None
            self._status.state = IDLE
            self._status.message = "Discarded the cancelled run."
        return self.status()

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job thread ends (for the CLI and tests)."""
        thread = self._thread
        if thread:
            thread.join(timeout)
        return self.status()

    # ----- the job thread -----------------------------------------------------------------------
    def _run(self, config, data) -> None:
        from core.training import train

        try:
            result = train(config, on_progress=self._on_progress, should_stop=self._stop.is_set, data=data)
        except WorkbenchError as error:
            self._finish(FAILED, str(error) + _resumable_note(config))
            return
        except Exception as error:  # a bug or a library failure: report it, keep serving
            self._finish(FAILED, f"Training failed: {type(error).__name__}: {error}" + _resumable_note(config))
            return
        with self._lock:
            self._status.metrics_before = result.metrics_before
            self._status.metrics_after = result.metrics_after
            self._status.warnings = list(result.warnings)
        if result.stopped:
            with self._lock:
                self._pending = result
            self._finish(CANCELLED, f"Cancelled after step {result.steps_done} of "
                                    f"{result.total_steps}: save what was trained, or discard it.")
        else:
            if config.checkpoint_dir:  # saved: the settings, uploads and checkpoints are done with
                shutil.rmtree(config.checkpoint_dir, ignore_errors=True)
            resumed = f" (resumed from step {result.resumed_from_step})" if result.resumed_from_step else ""
            precision = "bf16 autocast" if result.precision == "bf16" else "float32"
            self._finish(FINISHED, f"Done: saved as '{self._status.model_name}'{resumed}; trained in {precision}.")

    def _on_progress(self, progress) -> None:
        with self._lock:
            self._status.progress = progress
            if progress.warnings:
                self._status.warnings = list(progress.warnings)
            if progress.phase == "training":
                self._status.last_training_step = progress
            if progress.phase == "training" and progress.loss is not None:
                self._status.loss_curve.append(
                    {"step": progress.step, "loss": float(progress.loss), "series": "train"})
            if progress.eval_metrics and "loss" in progress.eval_metrics:
                self._status.loss_curve.append(
                    {"step": progress.step, "loss": float(progress.eval_metrics["loss"]),
                     "series": "validation"})
                if progress.phase == "evaluating-before":
                    self._status.metrics_before = dict(progress.eval_metrics)
            if self._status.state == RUNNING:
                self._status.message = describe_progress(progress)

    def _finish(self, state: str, message: str) -> None:
        with self._lock:
            self._status.state = state
            self._status.message = message
            self._status.finished_at = time.time()


def remove_interrupted_saves(models_dir) -> list[str]:
    """Delete the hidden `.<name>.saving-<pid>` folders of saves cut off by a crash (kill -9, power
    loss); the registry never lists them, this only frees the disk. Returns what was removed."""
    removed = []
    for folder in Path(models_dir).glob(".*.saving-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
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


def base_model_choices(task: str) -> list[ModelChoice]:
    """Models to fine-tune for `task`: packaged (offline) first, then local, then Hub ids."""
    from core.packaged import packaged_models

    registry = get_registry()
    packaged = [packaged_choice(model) for model in packaged_models().values() if task in model.train_tasks]
    if task != CLASSIFICATION:
        others = registry.choices(PANEL_TASK[task])
    else:
        # Any local encoder takes a new head: classifiers and masked LMs alike.
        others = registry.local_choices(TEXT_CLASSIFICATION, FILL_MASK)
        others += [ModelChoice(repo, repo, False, ready=False) for repo in CLASSIFICATION_HUB_BASES]
    listed = {choice.name for choice in packaged}
    return packaged + [choice for choice in others if choice.name not in listed]


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
    if not record or not latest:
        return None
    if (run_folder.parent.parent / record["model_name"]).exists():
        # Saved, then cut off before its checkpoints were cleared: nothing left to resume.
        shutil.rmtree(run_folder, ignore_errors=True)
        return None
    state = checkpoints.read_state(latest[1])
    return InterruptedRun(record["model_name"], state["step"], state["total_steps"])


def _record_fields(config) -> dict:
    """The settings a resumed run needs (where it saves and looks models up is decided anew)."""
    fields = dataclasses.asdict(config)
    for key in ("output_dir", "models_dir", "checkpoint_dir", "resume"):
        fields.pop(key)
    return fields


def _resumable_note(config) -> str:
    latest = checkpoints.latest_checkpoint(config.checkpoint_dir)
    return f" It can resume from its checkpoint at step {latest[0]}." if latest else ""


def _target_folder(models_dir: Path, model_name: str) -> Path:
    name = (model_name or "").strip()
    if not is_valid_local_name(name):
        raise WorkbenchError(
            "Name the new model with letters, digits, '.', '_' or '-' (up to 100 characters, "
            "starting with a letter or digit).")
    target = Path(models_dir) / name
    if target.exists():
        raise WorkbenchError(f"A model named '{name}' already exists: choose another name.")
    return target


_runner = JobRunner()


def get_runner() -> JobRunner:
    """The server's one job runner."""
    return _runner
