"""How the web server's job runner and a training process talk to each other.

The runner starts the training entry point (`python -m core.training`, optionally under
torchrun with several processes) as a child process:

- Out: the child prints one event per line on stdout, as `@@workbench {json}` (other lines, a
  library's own prints, are not events): `progress` (a core.training.Progress), `trained` (the
  metrics, whether it was stopped early), `saved`, `save_failed`, `discarded`, `failed`.
- In: a control folder both can reach. `stop` (a file) asks the training loop to stop at its
  next step boundary; every process of a multi-process run reads it and they agree on the step.
  `command.json` asks a child that holds a trained model (after a cancel or a failed save) to
  save it somewhere or to discard it; the child takes the command (deletes the file), answers
  with an event, and exits once the model is saved or discarded.

Files are written under a temporary name and renamed, so a reader never sees half a command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core import atomic

EVENT_PREFIX = "@@workbench "
STOP_FILE = "stop"
COMMAND_FILE = "command.json"


def event_line(kind: str, **fields) -> str:
    """One event as the line the child prints."""
    return EVENT_PREFIX + json.dumps({"event": kind, **fields}, default=str)


def parse_event(line: str) -> dict | None:
    """The event in a line the child printed, or None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class ControlFolder:
    """The runner's side (request_stop, send) and the child's side (stop_requested, take)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def request_stop(self) -> None:
        (self.path / STOP_FILE).touch()

    def stop_requested(self) -> bool:
        return (self.path / STOP_FILE).exists()

    def send(self, action: str, **fields) -> None:
        atomic.write_text(self.path / COMMAND_FILE, json.dumps({"action": action, **fields}))

    def take(self) -> dict | None:
        """The waiting command, removed so that it runs once; None when there is none."""
        command_file = self.path / COMMAND_FILE
        try:
            command = json.loads(command_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        command_file.unlink(missing_ok=True)
        return command


class StopRequest:
    """`should_stop` for the training loop of a child process: true once the control folder
    holds a stop request, after SIGTERM or Ctrl-C (the first one stops at the next step; a
    second one ends the process at once), or, with a control folder, once the process that
    started this one is gone (`orphaned`: nobody is left to follow or save the run)."""

    def __init__(self, folder: ControlFolder | None) -> None:
        import signal
        import threading

        self.folder = folder
        self.signalled = False
        self._parent = os.getppid()
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, self._on_signal)

    def _on_signal(self, number, frame) -> None:
        import signal

        self.signalled = True
        signal.signal(number, signal.SIG_DFL)

    @property
    def orphaned(self) -> bool:
        return self.folder is not None and os.getppid() != self._parent

    def __call__(self) -> bool:
        return self.signalled or self.orphaned or (self.folder is not None and self.folder.stop_requested())


def hold_until_saved(save, target, folder: ControlFolder | None, emit, stop: StopRequest,
                     on_saved=lambda: None, poll_seconds: float = 0.2) -> int:
    """Keep a trained model in this process until it is saved or discarded: `save(folder)` it to
    `target` if given, then follow the control folder's commands. A failed save (disk full, a
    name taken meanwhile) is reported and the model waits for the next command. Returns the
    process's exit code. (The caller passes `save`: this protocol knows nothing of training.)"""
    import time

    from core.errors import WorkbenchError

    if folder is None:
        raise WorkbenchError("--hold-until-saved needs --control-dir: the folder its commands arrive in.")
    while True:
        if target:
            emit("saving", output_dir=str(target))
            try:
                save(target)
            except Exception as error:  # the model stays here; the reason goes to the runner
                reason = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"
                emit("save_failed", reason=reason, output_dir=str(target))
            else:
                on_saved()
                emit("saved", output_dir=str(target))
                return 0
        command = None
        while command is None:
            if stop.orphaned:
                return 3
            time.sleep(poll_seconds)
            command = folder.take()
        if command.get("action") == "discard":
            emit("discarded")
            return 0
        target = command.get("output_dir")
