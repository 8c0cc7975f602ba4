"""The run history: every fine-tuning run that ended (finished, cancelled, failed), with what
it trained, how, what it measured and where its model is, kept in the models folder.

One JSON file, `<models dir>/.runs.json` (a dot-file: no picker lists it), newest run last;
each write goes to a temporary file renamed over the old one, so a crash never leaves half a
history. A run's entry is written when it ends and updated when its fate changes later (a
cancelled run saved or discarded, its model renamed or deleted).

    history = RunHistory(models_dir)  # one per server (build_app), shared by its runner and pages
    history.record(entry)          # insert or replace by entry["id"]
    history.runs()                 # newest first
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

from core import atomic

HISTORY_FILE = ".runs.json"
MAX_RUNS = 500  # the oldest entries go beyond this: the file stays quick to read at every page tick
class RunHistory:
    def __init__(self, models_dir: str | Path) -> None:
        self.path = Path(models_dir) / HISTORY_FILE
        self._lock = threading.Lock()  # one writer at a time within the server
        self._read: tuple[tuple, list[dict]] | None = None  # (the file's version, its runs newest first)

    def runs(self) -> list[dict]:
        """Every recorded run, newest first (not to be changed: they are shared). A missing or
        unreadable file is an empty history. Read again only when the file changed (pages ask
        at every tick of their job timer)."""
        try:
            stat = self.path.stat()
        except OSError:
            return []
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # each write is a new file (os.replace)
        if self._read is None or self._read[0] != version:
            self._read = (version, list(reversed(self._on_disk())))
        return list(self._read[1])

    def _on_disk(self) -> list[dict]:
        """The runs on disk, oldest first."""
        try:
            runs = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return runs if isinstance(runs, list) else []

    def get(self, run_id: str) -> dict | None:
        return next((run for run in self.runs() if run.get("id") == run_id), None)

    def record(self, entry: dict) -> None:
        """Add `entry`, or replace the entry with its id."""
        with self._lock:
            runs = [run for run in self._on_disk() if run.get("id") != entry["id"]]
            self._write([*runs, entry][-MAX_RUNS:])

    def model_renamed(self, old: str, new: str) -> None:
        self._update_saved(old, lambda run: run.update(saved_as=new))

    def model_deleted(self, name: str) -> None:
        self._update_saved(name, lambda run: run.update(saved_as=None, deleted=name))

    def _update_saved(self, name: str, change) -> None:
        with self._lock:
            runs = self._on_disk()
            for run in runs:
                if run.get("saved_as") == name:
                    change(run)
            self._write(runs)

    def _write(self, runs: list[dict]) -> None:
        atomic.write_text(self.path, json.dumps(runs, indent=1))


def run_entry(run_id: str, config, model_name: str, state: str, message: str, started_at: float,
              finished_at: float, result: dict | None, loss_curve: list[dict], metrics_before: dict | None,
              metrics_after: dict | None, saved_as: str | None, owner: str = "") -> dict:
    """One run's history entry, from the job's settings and what its training process reported."""
    result = result or {}
    settings = {key: value for key, value in dataclasses.asdict(config).items()
                if key not in ("train_file", "validation_file", "output_dir", "models_dir", "checkpoint_dir")}
    # Epochs and batch size left to the defaults are sized when the data is read: what ran.
    settings.update({key: result[key] for key in ("epochs", "batch_size") if result.get(key) is not None})
    data = result.get("data_source") or Path(config.train_file or "").name
    return {
        "id": run_id, "model_name": model_name, "task": config.task, "base_model": config.base_model,
        "data": data, "state": state, "message": message, "stopped": bool(result.get("stopped")),
        "started_at": started_at, "finished_at": finished_at, "seconds": round(finished_at - started_at, 1),
        "steps": result.get("steps"), "total_steps": result.get("total_steps"),
        "precision": result.get("precision"), "kept": result.get("kept"),
        "early_stopped": bool(result.get("early_stopped")), "settings": settings,
        "metrics_before": _plain_metrics(metrics_before), "metrics_after": _plain_metrics(metrics_after),
        "loss_curve": loss_curve, "saved_as": saved_as, "owner": owner,
    }


OTHERS_DATA = "(someone else's file)"


def as_seen_by(runs: list[dict], person) -> list[dict]:
    """The runs as `person` (core.ownership.Person) may see them: another person's runs without
    the name of their data file, and no one's owner id."""
    shown = []
    for run in runs:
        visible = {key: value for key, value in run.items() if key != "owner"}
        if not person.may_act_on(run.get("owner")):
            visible["data"] = OTHERS_DATA
        shown.append(visible)
    return shown


def _plain_metrics(metrics: dict | None) -> dict | None:
    """The metrics worth keeping per run (the confusion matrix and per-class scores stay in the
    saved model's metrics.json)."""
    if not metrics:
        return None
    return {key: metrics[key] for key in ("loss", "perplexity", "accuracy", "macro_f1") if key in metrics}
