"""The fork server (core/jobs/forkserver.py): a run forked from it trains to the same model as a
spawned one, with its own streams, folder and exit code; a run it cannot serve is spawned; runs
end with it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess

import psutil
import pytest
import torch
from safetensors.torch import load_file

from core import jobs
from core.jobs import JobRunner
from core.jobs.forkserver import ForkServer
from test_core_jobs import small_run


@pytest.fixture
def own_models(models_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", folder / "tiny-bert-sentiment")
    return folder


def test_a_forked_process_has_its_own_arguments_folder_streams_and_exit_code(forkserver, tmp_path):
    (tmp_path / "in.json").write_text('{"b": [1, 2]}')
    with open(tmp_path / "stderr", "w+") as stderr:
        process = forkserver.start_process(["-m", "json.tool", "--compact", "in.json"], dict(os.environ), tmp_path,
                                           stderr.fileno())
        assert process.stdout.read() == '{"b":[1,2]}\n' and process.wait(60) == 0
        failing = forkserver.start_process(["-m", "json.tool", "missing.json"], dict(os.environ), tmp_path,
                                           stderr.fileno())
        assert failing.stdout.read() == "" and failing.wait(60) == 2  # argparse: the file cannot be opened
        stderr.seek(0)
        assert "No such file or directory: 'missing.json'" in stderr.read()
    assert process.pid != failing.pid and not psutil.pid_exists(process.pid)  # reaped


def test_a_forked_run_trains_to_the_same_model_as_a_spawned_one(own_models, tmp_path, forkserver):
    spawned_runner = JobRunner(own_models)
    spawned_runner.start(small_run(tmp_path), "spawned")
    spawned = spawned_runner.wait(300)
    forked_before = forkserver.started
    forked_runner = JobRunner(own_models, forkserver=forkserver)
    forked_runner.start(small_run(tmp_path), "forked")
    forked = forked_runner.wait(300)
    assert forkserver.started == forked_before + 1
    assert spawned.state == forked.state == jobs.FINISHED, (spawned, forked)
    assert forked.metrics_before == spawned.metrics_before and forked.metrics_after == spawned.metrics_after
    assert forked.metrics_after["loss"] < forked.metrics_before["loss"]  # it trained
    weights = [load_file(own_models / name / "model.safetensors") for name in ("spawned", "forked")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    labels = [json.loads((own_models / name / "config.json").read_text())["id2label"] for name in ("spawned", "forked")]
    assert labels[0] == labels[1]


def test_a_run_is_forked_only_where_the_imports_would_have_read_its_environment(forkserver):
    """Modules read some variables once, at import: the fork server's imports were made in its
    environment. (A run that is not forked is spawned. The injected faults of test_core_jobs.py
    change PYTHONPATH, so they get a fork server of their own, whose sitecustomize runs as it
    starts.)"""
    own = dict(os.environ)
    assert forkserver.serves({**own, "OMP_NUM_THREADS": "3", "PYTHONUNBUFFERED": "1"})  # set per run, applied
    for read_when_used in ({"TOKENIZERS_PARALLELISM": "false"}, {"TORCHINDUCTOR_CACHE_DIR": "/tmp/compiled"},
                           {"TORCH_WARM_POOL": "0"}, {"HF_HUB_DISABLE_TELEMETRY": "True"}):  # libraries set these
        assert forkserver.serves({**own, **read_when_used}), read_when_used
    for changed in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:1"}, {"PYTHONPATH": "/elsewhere"},
                    {"WORKBENCH_TEST_FAULT": "disk-full"}, {"TRANSFORMERS_VERBOSITY": "error"},
                    {"GOMP_SPINCOUNT": "3000"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        assert not forkserver.serves({**own, **changed}), changed
        assert list(changed)[0] in forkserver.refusal
    assert not forkserver.serves({key: value for key, value in own.items() if key != "HF_HOME"})


def test_runs_end_with_their_fork_server_and_the_next_runs_are_spawned(own_models, tmp_path):
    server = ForkServer()
    try:
        runner = JobRunner(own_models, forkserver=server)
        runner.start(small_run(tmp_path, epochs=20, batch_size=2), "cut")
        runner.wait_until(lambda status: status.last_training_step is not None or not status.active, timeout=120)
        training = psutil.Process(runner.training_pid())
        assert training.name() == "workbench-train" and server.started == 1  # forked, and named so in `top`
        fork_server = training.parent()
        fork_server.send_signal(signal.SIGKILL)
        ended = runner.wait(60)
        assert ended.state == jobs.FAILED and "killed by SIGKILL" in ended.message, ended
        try:  # the kernel kills it with its fork server (its parent-death signal), as soon as it is scheduled
            training.wait(timeout=30)
        except psutil.TimeoutExpired:
            assert training.status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped
        assert not server.serves(dict(os.environ)) and server.failed  # the next runs are spawned
    finally:
        server.close()


def test_a_preview_times_its_steps_in_a_forked_process(own_models, tmp_path, forkserver):
    import transformers

    from core.data import load_training_data
    from core.run_plan import plan_run
    from core.step_timing import StepTimer

    config = dataclasses.replace(small_run(tmp_path), models_dir=str(own_models), epochs=2)
    data = load_training_data("classification", config.train_file, validation_share=config.validation_share, seed=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(own_models / "tiny-bert-sentiment")
    plan = plan_run(config, data, tokenizer, 128)
    forked_before = forkserver.started
    timing = StepTimer(forkserver).timing(config, plan)
    assert forkserver.started == forked_before + 1
    assert timing.seconds_per_step > 0 and timing.evaluation_seconds > 0 and timing.precision == "fp32"


def test_a_forked_process_that_takes_too_long_is_killed_and_says_so(forkserver, tmp_path):
    (tmp_path / "hangs.py").write_text("import sys, time\nprint('started', flush=True)\ntime.sleep(600)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run([str(tmp_path / "hangs.py")], dict(os.environ), tmp_path, timeout=1)
    finished = forkserver.run(["-m", "json.tool", "--compact"], {**os.environ}, tmp_path, timeout=60)
    assert finished.returncode == 1 and "Expecting value" in finished.stderr  # empty stdin: a JSON error


FORKED_HERE = """
import os, sys, threading
import psutil
from core.jobs.forkserver import ForkServer

waiting = threading.Event()
other_thread = threading.Thread(target=waiting.wait)
other_thread.start()
print("with another thread:", ForkServer().start_here_if_preloaded())
waiting.set()
other_thread.join()
print("without the imports:", ForkServer(preload=("this_module_was_never_imported",)).start_here_if_preloaded())

server = ForkServer()
print("preloaded, alone:", server.start_here_if_preloaded())
(fork_server,) = psutil.Process().children()
# Forked from this process, not a new interpreter that imports everything again.
print("same command line:", fork_server.cmdline() == psutil.Process().cmdline())
run = server.run(["-m", "json.tool", "--compact", "in.json"], dict(os.environ), os.getcwd(), timeout=60)
print("a run through it:", run.returncode, run.stdout.strip())
server.close()
print("gone when closed:", not psutil.pid_exists(fork_server.pid))
"""


def test_a_process_that_has_the_imports_and_no_thread_forks_its_fork_server_from_itself(forkserver, tmp_path):
    """An app server forked from a preloaded process (as the suite starts them) starts its fork
    server without a new interpreter; a process missing an import, or running a thread, does not."""
    (tmp_path / "forked_here.py").write_text(FORKED_HERE)
    (tmp_path / "in.json").write_text('{"b": [1, 2]}')
    # Run forked from the session's fork server: a process with the imports done and one thread.
    done = forkserver.run([str(tmp_path / "forked_here.py")], dict(os.environ), tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["with another thread: False", "without the imports: False",
                                        "preloaded, alone: True", "same command line: True",
                                        'a run through it: 0 {"b":[1,2]}', "gone when closed: True"]
