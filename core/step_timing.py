"""A few real training steps of a planned run, timed on this machine before it starts.

The preview's time estimate comes from here, never from a constant: the same entry point as a
run (`python -m core.training --time-steps N`) runs in a child process, as training always does
(the server's memory and threads never see it; forked from the job runner's fork server), loads
the model and data, makes one step to warm up and N timed ones, and reports. Timings are kept
per run shape (model, task, sequence length, batch, precision, LoRA, frozen embeddings), so a
second preview of the same shape asks no new timing. One timing runs at a time, and none while a
training job runs: the machine is busy then, and the figure would be wrong and the job slower.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import WorkbenchError
from core.limits import TIMING_TIMEOUT_S
from core.run_plan import RunPlan, StepTiming

if TYPE_CHECKING:
    from core.jobs.forkserver import ForkServer

TIMED_STEPS = 2
_ROOT = Path(__file__).resolve().parent.parent


class StepTimer:
    """Times run shapes in child processes and remembers them (one per server)."""

    def __init__(self, forkserver: "ForkServer | None" = None) -> None:
        self.forkserver = forkserver  # the job runner's: a timing then starts without importing torch again
        self._measuring = threading.Lock()  # one timing at a time: two at once would each measure the other
        self._lock = threading.Lock()  # guards _known (held for a moment only)
        self._known: dict[tuple, dict] = {}  # run shape -> per-example figures

    def timing(self, config, plan: RunPlan) -> StepTiming:
        """The timing of `config` as planned: remembered, or measured now (seconds)."""
        key = _shape(config, plan)
        with self._measuring:
            with self._lock:
                figures = self._known.get(key)
            if figures is None:  # not measured, also not while this caller waited its turn
                figures = self._measure(config)
                with self._lock:
                    self._known[key] = figures
        return StepTiming(seconds_per_step=figures["per_example"] * plan.batch_size * plan.accumulation,
                          load_seconds=figures["load_seconds"],
                          evaluation_seconds=figures["evaluation_per_example"] * plan.validation_examples,
                          precision=figures["precision"])

    def known(self, config, plan: RunPlan) -> bool:
        with self._lock:
            return _shape(config, plan) in self._known

    def _measure(self, config) -> dict:
        folder = Path(tempfile.mkdtemp(prefix="workbench-timing-"))
        try:
            (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)), encoding="utf-8")
            environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
            # Asked (and the fork server started) before the clock: runs start forked from it, so
            # its own start is no part of a run's loading time.
            forked = self.forkserver is not None and self.forkserver.serves(environment)
            started = time.monotonic()
            try:
                child = self._run(["-m", "core.training", "--config", str(folder / "config.json"), "--time-steps",
                                   str(TIMED_STEPS), "--report-json"], environment, forked)
            except subprocess.TimeoutExpired:
                raise WorkbenchError(f"Timing a few steps took over {TIMING_TIMEOUT_S} s: the run would be very "
                                     f"long on this machine. Try a smaller model, LoRA or a shorter max length.") from None
            elapsed = time.monotonic() - started
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        from core.control import parse_event

        events = [event for event in map(parse_event, child.stdout.splitlines()) if event]
        timing = next((event for event in events if event.get("event") == "timing"), None)
        if timing is None:
            failed = next((event["reason"] for event in events if event.get("event") == "failed"), None)
            last = (child.stderr.strip().splitlines() or ["no message"])[-1][:300]
            raise WorkbenchError(failed or f"Timing a few steps failed: {last}")
        batch = timing["batch_size"] * config.gradient_accumulation_steps
        validation = max(timing.get("validation_examples") or 1, 1)
        return {"per_example": timing["seconds_per_step"] / batch,
                "evaluation_per_example": timing["evaluation_seconds"] / validation,
                "load_seconds": max(elapsed - timing["timed_seconds"], 0.0), "precision": timing["precision"]}

    def _run(self, args: list[str], environment: dict[str, str], forked: bool) -> subprocess.CompletedProcess:
        """`python <args>` to its end: forked from the fork server, else spawned."""
        if forked:
            try:
                return self.forkserver.run(args, environment, _ROOT, TIMING_TIMEOUT_S)
            except OSError:
                pass  # gone meanwhile: spawned below
        return subprocess.run([sys.executable, *args], cwd=_ROOT, capture_output=True, text=True,
                              timeout=TIMING_TIMEOUT_S, env=environment)


def _shape(config, plan: RunPlan) -> tuple:
    """What a step's time depends on (the number of steps is the plan's business)."""
    return (config.base_model, config.task, plan.tokens_per_example, config.precision, config.lora, config.lora_rank,
            config.freeze_embeddings, config.models_dir)
