"""Process start -> HTTP 200 on `/`, against a start that imports torch and transformers first
(what the app would cost if it loaded model libraries at import). Target: <= 4 s on 2 cores.

    .venv/bin/python bench/startup.py [--repeats 3] [--smoke]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import ROOT, free_port, parse_args, record, table

EAGER = "import torch, transformers, runpy, sys; sys.argv = ['app.py'] + sys.argv[1:]; runpy.run_path('app.py', run_name='__main__')"


def time_to_page(command: list[str]) -> float:
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    process = subprocess.Popen(command + ["--models-dir", tempfile.mkdtemp()], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    lazy = [time_to_page([sys.executable, "app.py"]) for _ in range(repeats)]
    eager = [time_to_page([sys.executable, "-c", EAGER]) for _ in range(repeats)]
    ours, baseline = statistics.median(lazy), statistics.median(eager)
    body = table(["start", f"median of {repeats} (s)", "runs (s)"], [
        ["app.py (model libraries load on first use)", ours, ", ".join(f"{t:.2f}" for t in lazy)],
        ["baseline: torch + transformers imported first", baseline, ", ".join(f"{t:.2f}" for t in eager)],
    ])
    body += f"\n\nRatio: the page is up {baseline / ours:.2f}x sooner than with eager imports; target <= 4 s: " \
            f"{'met' if ours <= 4 else 'NOT met'} ({ours:.2f} s)."
    record("Startup: process start to HTTP 200 on /", body, args.smoke)


if __name__ == "__main__":
    main()
