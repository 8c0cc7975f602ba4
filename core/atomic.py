"""Writing files and folders so that no reader ever sees them half-written.

Everything is written under a hidden temporary name beside its target (the same folder, so the
same file system: renaming is atomic; a dot-name, so the model listings skip it) and renamed
into place once complete. A crash mid-way leaves at most a hidden leftover, never a torn file or
a half model. Every writer of state that another process or a later start reads uses this:
the job's command file, run history, ownership, measurements, saved and converted models.
(Training checkpoints rename their own folder: every training process writes into it between
barriers, so its name cannot be one process's, core/checkpoints.py.)
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_beside(target: Path, purpose: str) -> Path:
    """A hidden name next to `target`, unique to this process and thread:
    `.<name>.<purpose>-<pid>-<thread>`."""
    return target.parent / f".{target.name}.{purpose}-{os.getpid()}-{threading.get_ident()}"


def leftovers(folder: Path, purpose: str) -> list[tuple[Path, int]]:
    """The temporaries for `purpose` in `folder`, each with the process that wrote it (to tell
    a write cut off by a crash from one still running)."""
    found = []
    for path in Path(folder).glob(f".*.{purpose}-*"):
        pid = path.name.rsplit(f".{purpose}-", 1)[-1].split("-", 1)[0]
        if pid.isdigit():
            found.append((path, int(pid)))
    return found


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path, "writing")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def written_folder(target: Path, purpose: str = "writing", keep_theirs: bool = False) -> Iterator[Path]:
    """Yield a temporary folder path (not yet created) to write into; when the block ends
    without error it becomes `target`, else it is removed. The target must not exist (a rename
    onto a folder with files fails); with `keep_theirs`, a target that another process completed
    meanwhile is kept, and ours dropped (both came from the same source)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(target, purpose)
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        yield temporary
        try:
            os.rename(temporary, target)
        except OSError:
            if not (keep_theirs and target.is_dir()):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
