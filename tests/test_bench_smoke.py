"""Each bench script runs end to end on tiny inputs (--smoke), so none of them can rot. No
timing is asserted here: the figures and their targets live in the bench output."""

from __future__ import annotations

import os

import pytest

from conftest import REPO_ROOT

SMOKE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def bench_forkserver():
    """Each script is forked from one process that imported torch, transformers and gradio: a
    script runs as `python bench/<script>` would, without importing them again."""
    from core.jobs import ForkServer

    server = ForkServer(preload=("torch", "transformers", "datasets", "accelerate", "core.training", "core.inference",
                                 "core.models", "core.data", "gradio", "gradio_client"))
    yield server
    server.close()


@pytest.mark.parametrize("script", ["startup.py", "infer.py", "threads.py", "train.py", "packaged_load.py",
                                    "starter.py", "fill_mask_minilm.py", "jobs.py", "quality.py", "qa_chat.py",
                                    "concurrency.py", "threads_under_load.py", "compiled_decoding.py",
                                    "style_steps.py", "idle_server.py",
                                    pytest.param("watching_page.py", marks=pytest.mark.browser)])  # in Chromium
def test_the_bench_script_runs_and_prints_its_comparison(script, bench_forkserver):
    results = REPO_ROOT / "bench" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    run = bench_forkserver.run([f"bench/{script}", "--smoke"], dict(os.environ), REPO_ROOT, SMOKE_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| --- |" in run.stdout  # a table of figures
    assert "ratio" in run.stdout.lower() or "x Trainer" in run.stdout  # compared with a baseline
    assert (results.read_text() if results.exists() else None) == before  # smoke runs write nothing
