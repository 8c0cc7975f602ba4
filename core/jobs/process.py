"""One job's child process: `python -m core.training`, dying with the server."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.jobs.forkserver import ForkServer

_REPO_ROOT = Path(__file__).resolve().parents[2]  # where `python -m core.training` is found


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

    def start(self, forkserver: "ForkServer | None" = None) -> None:
        """Start the child; call it from the thread that follows it (see JobRunner._launch).
        With a fork server that serves this environment, a single-process run is forked from it
        (its imports done); otherwise, and if forking fails, it is spawned."""
        import subprocess
        import sys

        environment = self.environment()
        if forkserver is not None and self._command[:2] == ["-m", "core.training"]:
            why = None
            if forkserver.serves(environment):
                try:
                    self.child = forkserver.start_process(self._command, environment, _REPO_ROOT,
                                                          self._stderr.fileno())
                    return
                except OSError as error:
                    why = str(error)
            # In the server's log: such runs start seconds slower, and this says why.
            print(f"Spawned the training process of '{self.run_name}', not forked: "
                  f"{why or forkserver.refusal or 'the fork server could not serve it'}.",
                  file=sys.stderr, flush=True)
        self.child = subprocess.Popen(
            [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *self._command],
            cwd=_REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, encoding="utf-8", env=environment)

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
