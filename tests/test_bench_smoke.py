"""Each bench script runs end to end on tiny inputs (--smoke), so none of them can rot. No
timing is asserted here: the figures and their targets live in the bench output."""

from __future__ import annotations

import os
import threading

import pytest

from conftest import REPO_ROOT

SMOKE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def bench_forkserver():
    """Each script is forked from one process that imported torch and transformers: a script
    runs as `python bench/<script>` would, without importing them again."""
    from core.jobs import ForkServer

    server = ForkServer(preload=("torch", "transformers", "datasets", "accelerate", "core.training", "core.inference",
                                 "core.models", "core.data"))
    yield server
    server.close()


@pytest.mark.parametrize("script", ["startup.py", "infer.py", "threads.py", "train.py", "packaged_load.py",
                                    "starter.py", "fill_mask_minilm.py", "jobs.py", "quality.py", "qa_chat.py",
                                    "concurrency.py", "threads_under_load.py", "compiled_decoding.py",
                                    "style_steps.py"])
def test_the_bench_script_runs_and_prints_its_comparison(script, bench_forkserver, tmp_path):
    results = REPO_ROOT / "bench" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    with open(tmp_path / "stderr", "w+", encoding="utf-8") as stderr:
        run = bench_forkserver.start_process([f"bench/{script}", "--smoke"], dict(os.environ), REPO_ROOT,
                                             stderr.fileno())
        too_long = threading.Timer(SMOKE_TIMEOUT_S, run.kill)  # a hung script fails, killed, instead of hanging
        too_long.start()
        with run.stdout:
            stdout = run.stdout.read()
        code = run.wait()
        too_long.cancel()
        stderr.seek(0)
        assert code == 0, stderr.read()[-3000:]
    assert "| --- |" in stdout  # a table of figures
    assert "ratio" in stdout.lower() or "x Trainer" in stdout  # compared with a baseline
    assert (results.read_text() if results.exists() else None) == before  # smoke runs write nothing
