"""Shared by the bench scripts: medians over repeats, a printed table, bench/RESULTS.md, and an
app server started as a person starts it.

Each script measures a baseline and our way in the same run and prints the ratio. With
`--smoke` (used by the test suite, so the scripts cannot rot) it runs once on tiny inputs and
does not touch RESULTS.md.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
sys.path.insert(0, str(ROOT))


def parse_args(default_repeats: int | None, description: str | None = None):
    """The flags every bench script takes; returns (args, repeats): one repeat with --smoke, and
    no --repeats flag for a script whose figures are rates over whole runs (default None)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    if default_repeats is not None:
        parser.add_argument("--repeats", type=int, default=default_repeats)
    parser.add_argument("--smoke", action="store_true", help="tiny inputs, one repeat, RESULTS.md untouched")
    args = parser.parse_args()
    return args, 1 if args.smoke or default_repeats is None else args.repeats


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def paired_medians(baseline: Callable[[], object], ours: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each, timed in turns (baseline, ours, baseline, ...) so that drift in the
    machine's speed during the run falls on both alike."""
    pairs = [(median_seconds(baseline, 1)[0], median_seconds(ours, 1)[0]) for _ in range(repeats)]
    return statistics.median(b for b, _ in pairs), statistics.median(o for _, o in pairs)


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def record(section: str, body: str, smoke: bool) -> None:
    """Print `body`, and (unless smoke) put it in RESULTS.md under `## section`, replacing the
    previous figures of that section only."""
    print(body, flush=True)
    if smoke:
        return
    stamp = time.strftime("%Y-%m-%d")
    block = f"## {section}\n\nMeasured {stamp} on {machine()}.\n\n{body}\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else (
        "# Benchmark results\n\nEach section is written by its script in bench/ (rerun it to update).\n\n")
    marker = f"## {section}\n"
    if marker in text:
        start = text.index(marker)
        following = text.find("\n## ", start + len(marker))
        end = len(text) if following == -1 else following + 1
        text = text[:start] + block + ("\n" if following != -1 else "") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text, encoding="utf-8")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`command` (e.g. python app.py --batch-rows 1) with `models_dir` (else a new, empty models
    folder), started in `folder` and serving when this returns."""

    def __init__(self, command: list[str], folder=ROOT, models_dir=None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False"}
        self.process = subprocess.Popen([*command, "--models-dir", str(models_dir or tempfile.mkdtemp())], cwd=folder, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:  # up when it answers; app.py prints nothing we could wait on instead
            if self.process.poll() is not None:
                raise RuntimeError(f"{command} in {folder} exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
