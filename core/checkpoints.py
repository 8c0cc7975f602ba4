"""Training checkpoints: `accelerator.save_state` every N steps, and resuming from the last one.

A checkpoint folder holds `step-<N>/` (Accelerate's model, optimizer, scheduler and random
states, plus `workbench_state.json` with the step and the metrics measured before training).
Each is written under a hidden name and renamed when complete, so a crash while saving leaves
the previous checkpoint intact; only the newest is kept.

The app also keeps a run record (`run.json` and copies of the uploads) next to the
checkpoints, so that after a crash or restart it can offer to resume the run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from core.errors import WorkbenchError

STATE_FILE = "workbench_state.json"
RUN_FILE = "run.json"
_STEP_FOLDER = re.compile(r"^step-(\d+)$")


def latest_checkpoint(folder: str | Path | None) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint in `folder`, or None."""
    if not folder or not Path(folder).is_dir():
        return None
    found = [(int(match.group(1)), path) for path in Path(folder).iterdir()
             if (match := _STEP_FOLDER.match(path.name)) and (path / STATE_FILE).is_file()]
    return max(found) if found else None


def save_checkpoint(accelerator, folder: str | Path, step: int, total_steps: int,
                    metrics_before: dict) -> Path:
    """Every process calls this at the same step; the main process renames and prunes."""
    folder = Path(folder)
    partial, final = folder / f".step-{step}.partial", folder / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "total_steps": total_steps, "metrics_before": metrics_before}
        (partial / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for path in folder.iterdir():  # keep only the newest
            match = _STEP_FOLDER.match(path.name)
            if match and int(match.group(1)) != step:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest(accelerator, folder: str | Path | None, total_steps: int) -> tuple[int, dict] | None:
    """Restore the newest checkpoint into the prepared objects: (step, metrics_before), or None
    when there is none. A checkpoint of a run with another length is refused, not mixed in."""
    latest = latest_checkpoint(folder)
    if latest is None:
        return None
    step, path = latest
    state = read_state(path)
    if state["total_steps"] != total_steps:
        raise WorkbenchError(
            f"The checkpoint in {folder} belongs to a run of {state['total_steps']} steps, but these "
            f"settings make {total_steps}: resume with the same data and settings, or start afresh.")
    accelerator.load_state(str(path))
    return step, state["metrics_before"]


def read_state(checkpoint: Path) -> dict:
    """The workbench's record in one checkpoint: step, total_steps, metrics_before."""
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def remove_checkpoints(folder: str | Path | None) -> None:
    """Drop the step folders once the model is saved (the run record, if any, stays)."""
    if not folder or not Path(folder).is_dir():
        return
    for path in Path(folder).iterdir():
        if _STEP_FOLDER.match(path.name) or path.name.endswith(".partial"):
            shutil.rmtree(path, ignore_errors=True)


# ----- run records (the app's resumable runs) -------------------------------------------------
def write_run_record(folder: Path, model_name: str, config_fields: dict, server_pid: int | None = None,
                     owner: str = "") -> dict:
    """Copy the uploads into `folder` and record the run's settings (and the server process that
    runs it); returns the fields with the upload paths pointing at the copies (uploads in a temp
    folder may be gone after a restart). Each copy keeps the upload's name, in a sub-folder of
    its own (`train/`, `validation/`): the run's data, history and model card name the file
    the person uploaded. `owner`: who started it (core.ownership), who alone may resume it."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = dict(config_fields)
    for key, part in (("train_file", "train"), ("validation_file", "validation")):
        if fields.get(key):
            source = Path(fields[key])
            copy = folder / part / source.name
            if source.resolve() != copy.resolve():
                copy.parent.mkdir(exist_ok=True)
                shutil.copyfile(source, copy)
            fields[key] = str(copy)
    record = {"model_name": model_name, "config": fields, "server_pid": server_pid, "owner": owner}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return fields


def read_run_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
