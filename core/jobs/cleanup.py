"""What a crash or a restart leaves in the models folder, removed when a server starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core import atomic, checkpoints
from core.jobs.status import CHECKPOINTS_FOLDER


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
