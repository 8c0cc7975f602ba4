"""Threads for the server and a training child (core/cpu_threads.py): on machines of every size
(cores given, not detected), the training child leaves the server a core, the server's model
thread uses what the child leaves while it trains and every core again once it has trained, and
a person's own OMP_NUM_THREADS is left alone."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import separable_csv
from core import jobs
from core.cpu_threads import server_threads, training_threads
from core.jobs import JobRunner
from core.threads import MODEL_THREAD
from core.training import TrainConfig


@pytest.mark.parametrize("cores, processes, training, server_while_training", [
    (1, 1, 1, 1),  # one core: nothing to share, both get it
    (2, 1, 1, 1),
    (4, 1, 3, 1),
    (8, 2, 3, 2),  # two training processes share the cores less one
    (16, 4, 3, 4),
])
def test_training_leaves_the_server_a_core_and_the_server_uses_what_training_leaves(
        cores, processes, training, server_while_training):
    assert training_threads(cores, processes) == training
    assert server_threads(cores, training * processes) == server_while_training
    assert server_threads(cores, 0) == cores  # nothing training: every core


@pytest.fixture
def machine_of(monkeypatch, models_dir, tmp_path):
    """The model thread believes the machine has the given cores; afterwards it has its own again."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", folder / "tiny-bert-sentiment")
    computing_with = MODEL_THREAD.run_model_work(torch.get_num_threads)  # (asked while OMP_NUM_THREADS holds)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    own = MODEL_THREAD.cores

    def set_cores(cores: int) -> None:
        MODEL_THREAD.cores = cores

    yield set_cores
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # (a test may have set its own)
    MODEL_THREAD.cores = own
    MODEL_THREAD.run_model_work(lambda: None)  # the model thread takes its own count again
    assert MODEL_THREAD.run_model_work(torch.get_num_threads) == own
    # The later tests of this process compute with the count they had (their OMP_NUM_THREADS):
    # left at every core, in-process model work beside another pytest worker ran several times
    # slower (OpenMP threads spinning for cores the other worker holds).
    MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(computing_with))


def long_run(tmp_path) -> TrainConfig:
    return TrainConfig(task="classification", base_model="tiny-bert-sentiment", epochs=20, batch_size=2,
                       max_length=32, train_file=str(separable_csv(tmp_path / "w.csv", rows_per_class=20)))


def test_while_a_run_trains_the_server_uses_the_cores_it_leaves(machine_of, tmp_path, forkserver):
    machine_of(3)
    runner = JobRunner(tmp_path / "models", forkserver=forkserver)
    runner.start(long_run(tmp_path), "threads")
    trains = runner.wait_until(lambda status: status.last_training_step is not None, timeout=120)
    assert trains.threads == 2  # what the training process computes with: 3 cores, one left
    assert MODEL_THREAD.run_model_work(torch.get_num_threads) == 1
    runner.cancel()
    held = runner.wait(120)
    assert held.state == jobs.CANCELLED and held.awaiting_save  # trained, held: it computes no more
    assert MODEL_THREAD.run_model_work(torch.get_num_threads) == 3
    runner.discard_pending()


def test_a_persons_own_thread_count_is_left_alone(machine_of, tmp_path, monkeypatch, forkserver):
    machine_of(3)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = MODEL_THREAD.run_model_work(torch.get_num_threads)
    runner = JobRunner(tmp_path / "models", forkserver=forkserver)
    runner.start(long_run(tmp_path), "theirs")
    trains = runner.wait_until(lambda status: status.last_training_step is not None, timeout=120)
    assert trains.threads == 1  # theirs, passed on
    assert MODEL_THREAD.run_model_work(torch.get_num_threads) == before
    runner.cancel()
    runner.wait(120)
    runner.discard_pending()
