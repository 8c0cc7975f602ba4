"""The one fine-tuning job a server runs at a time, outside any web request.

The job runs in its own thread, so closing or refreshing the page does not stop it; any page
can read its live status and re-attach. After a cancel, the partly trained model is kept in
memory until the person chooses to save or discard it.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import WorkbenchError
from core.models import (
    FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelChoice, get_registry, is_valid_local_name,
)

# Which panel shows a model fine-tuned for each training task.
PANEL_TASK = {"classification": TEXT_CLASSIFICATION, "causal-lm": TEXT_GENERATION, "masked-lm": FILL_MASK}
# Encoders that take a new classification head well, for users who have the Hub.
CLASSIFICATION_HUB_BASES = ("distilbert/distilbert-base-uncased", "google-bert/bert-base-uncased")

IDLE, RUNNING, STOPPING, CANCELLED, FINISHED, FAILED = (
    "idle", "running", "stopping", "cancelled", "finished", "failed")


@dataclass
class JobStatus:
    """A snapshot of the job, safe to read while it runs."""

    state: str = IDLE
    model_name: str | None = None  # the folder name it saves to in the models directory
    task: str | None = None
    progress: Any = None  # the latest core.training.Progress
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

    def start(self, config, model_name: str) -> JobStatus:
        """Start training `config` in the background; it saves as `model_name` when done."""
        registry = get_registry()
        target = _target_folder(registry.models_dir, model_name)
        with self._lock:
            if self._status.active:
                progress = self._status.progress
                where = f" (step {progress.step}/{progress.total_steps})" if progress else ""
                raise WorkbenchError(
                    f"Busy: '{self._status.model_name}' is training{where}. Wait for it to finish "
                    f"or cancel it first.")
            if self._status.state == CANCELLED:
                raise WorkbenchError(
                    f"A cancelled run of '{self._status.model_name}' waits: save it or discard it first.")
            self._stop.clear()
            self._pending = None
            self._status = JobStatus(state=RUNNING, model_name=model_name, task=config.task,
                                     message="Loading the model and data, then scoring it before training…",
                                     started_at=time.time())
            config = replace(config, output_dir=str(target), models_dir=str(registry.models_dir))
            self._thread = threading.Thread(target=self._run, args=(config,), daemon=True,
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
        target = _target_folder(get_registry().models_dir, name)
        save_model(result, target)
        with self._lock:
            self._pending = None
            self._status.state = FINISHED
            self._status.message = f"Saved the partly trained model as '{name}'."
        return self.status()

    def discard_cancelled(self) -> JobStatus:
        with self._lock:
            if self._status.state != CANCELLED:
                raise WorkbenchError("There is no cancelled run to discard.")
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
    def _run(self, config) -> None:
        from core.training import train

        try:
            result = train(config, on_progress=self._on_progress, should_stop=self._stop.is_set)
        except WorkbenchError as error:
            self._finish(FAILED, str(error))
            return
        except Exception as error:  # a bug or a library failure: report it, keep serving
            self._finish(FAILED, f"Training failed: {type(error).__name__}: {error}")
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
            self._finish(FINISHED, f"Done: saved as '{self._status.model_name}'.")

    def _on_progress(self, progress) -> None:
        with self._lock:
            self._status.progress = progress
            if progress.warnings:
                self._status.warnings = list(progress.warnings)
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
                self._status.message = _describe(progress)

    def _finish(self, state: str, message: str) -> None:
        with self._lock:
            self._status.state = state
            self._status.message = message
            self._status.finished_at = time.time()


def base_model_choices(task: str) -> list[ModelChoice]:
    """Models to fine-tune for `task`: packaged (offline) first, then local, then Hub ids."""
    registry = get_registry()
    if task != "classification":
        return registry.choices(PANEL_TASK[task])
    from core.packaged import packaged_models

    packaged = [ModelChoice(name, f"{name.split(':', 1)[1]} (packaged, works offline)", True)
                for name in packaged_models()]
    # Any local encoder takes a new head: classifiers and masked LMs alike.
    local = [choice for panel_task in (TEXT_CLASSIFICATION, FILL_MASK)
             for choice in registry.choices(panel_task) if choice.local]
    return packaged + local + [ModelChoice(repo, repo, False) for repo in CLASSIFICATION_HUB_BASES]


def _describe(progress) -> str:
    if progress.phase != "training":
        return progress.phase.replace("-", " ").capitalize() + "…"
    parts = [f"Step {progress.step}/{progress.total_steps}"]
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.learning_rate is not None:
        parts.append(f"lr {progress.learning_rate:.2e}")
    if progress.samples_per_second:
        parts.append(f"{progress.samples_per_second:.1f} samples/s")
    if progress.eta_seconds is not None:
        parts.append(f"ETA {progress.eta_seconds:.0f} s")
    return " · ".join(parts)


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
