"""Each bench script runs end to end on tiny inputs (--smoke), so none of them can rot. No
timing is asserted here: the figures and their targets live in the bench output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.parametrize("script", ["startup.py", "infer.py", "threads.py", "train.py", "packaged_load.py",
                                    "starter.py", "fill_mask_minilm.py", "jobs.py", "quality.py", "qa_chat.py", "concurrency.py",
                                    "threads_under_load.py", "compiled_decoding.py",
                                    "style_steps.py"])
def test_the_bench_script_runs_and_prints_its_comparison(script):
    results = REPO_ROOT / "bench" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    args = ["--smoke"]
    run = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| --- |" in run.stdout  # a table of figures
    assert "ratio" in run.stdout.lower() or "x Trainer" in run.stdout  # compared with a baseline
    assert (results.read_text() if results.exists() else None) == before  # smoke runs write nothing
