"""The job runner in-process, on tiny models: a failed save keeps the trained model, run
folders that no run can use are cleared, a query changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import separable_csv
from core import checkpoints, jobs, models, training
from core.errors import WorkbenchError
from core.jobs import JobRunner, remove_stale_runs
from core.training import TrainConfig


@pytest.fixture
def own_models(models_dir, tmp_path, monkeypatch):
    """A models folder of this test, as the process-wide registry's."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", folder / "tiny-bert-sentiment")
    monkeypatch.setattr(models, "_registry", models.ModelRegistry(folder))
    return folder


def small_run(tmp_path, **values) -> TrainConfig:
    return TrainConfig(**{"task": "classification", "base_model": "tiny-bert-sentiment", "epochs": 1,
                          "batch_size": 8, "max_length": 32, "learning_rate": 3e-3,
                          "train_file": str(separable_csv(tmp_path / "w.csv", rows_per_class=20)), **values})


def test_a_save_that_fails_keeps_the_trained_model_until_it_is_saved(own_models, tmp_path, monkeypatch):
    real_save = training.save_model
    calls = []

    def disk_full_once(result, target):
        calls.append(target)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_save(result, target)

    monkeypatch.setattr(training, "save_model", disk_full_once)
    runner = JobRunner()
    runner.start(small_run(tmp_path), "kept")
    failed = runner.wait(120)
    assert failed.state == jobs.SAVE_FAILED and failed.awaiting_save
    assert "Could not save 'kept': OSError: [Errno 28] No space left on device" in failed.message
    assert "The trained model is kept" in failed.message
    assert not (own_models / "kept").exists() and not list(own_models.glob(".kept.saving-*"))
    with pytest.raises(WorkbenchError, match="waits: save it or discard it first"):
        runner.start(small_run(tmp_path), "another")  # nothing trained is pushed out by a new run
    runner.save_pending()
    saved = runner.wait(60)
    assert saved.state == jobs.FINISHED and saved.message.startswith("Done: saved as 'kept'")
    assert (own_models / "kept" / "model.safetensors").is_file()
    assert saved.metrics_after == failed.metrics_after


def test_a_waiting_model_can_be_discarded_with_its_checkpoints(own_models, tmp_path, monkeypatch):
    def always_full(result, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training, "save_model", always_full)
    runner = JobRunner()
    runner.start(small_run(tmp_path, epochs=3, checkpoint_every=2), "unsaved")
    assert runner.wait(120).state == jobs.SAVE_FAILED
    assert checkpoints.latest_checkpoint(own_models / ".checkpoints" / "unsaved")  # still resumable
    assert runner.interrupted_runs() == []  # the run is not offered twice while its model waits
    runner.save_pending()
    assert runner.wait(60).state == jobs.SAVE_FAILED  # failed again: still waiting, nothing lost
    assert runner.discard_pending().state == jobs.IDLE
    assert not (own_models / ".checkpoints" / "unsaved").exists()
    with pytest.raises(WorkbenchError, match="no trained model waiting"):
        runner.save_pending()


def write_run_folder(models_dir, name, with_checkpoint: bool, server_pid=None):
    folder = models_dir / ".checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("text,label\na,b\n")
    (folder / checkpoints.RUN_FILE).write_text(json.dumps({"model_name": name, "config": {},
                                                           "server_pid": server_pid}))
    if with_checkpoint:
        step = folder / "step-10"
        step.mkdir()
        (step / checkpoints.STATE_FILE).write_text(json.dumps({"step": 10, "total_steps": 40,
                                                               "metrics_before": {}}))
    return folder


def test_run_folders_that_no_run_can_use_are_removed_at_start(own_models):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a server that has exited
    write_run_folder(own_models, "failed-early", with_checkpoint=False, server_pid=gone.pid)
    write_run_folder(own_models, "resumable", with_checkpoint=True, server_pid=gone.pid)
    saved = write_run_folder(own_models, "saved-then-cut", with_checkpoint=True)
    shutil.copytree(own_models / "tiny-bert-sentiment", own_models / "saved-then-cut")
    write_run_folder(own_models, "training-elsewhere", with_checkpoint=False, server_pid=os.getppid())
    runner = JobRunner()
    assert [run.model_name for run in runner.interrupted_runs()] == ["resumable"]
    assert saved.is_dir()  # listing runs deleted nothing
    assert sorted(remove_stale_runs(own_models)) == ["failed-early", "saved-then-cut"]
    left = sorted(path.name for path in (own_models / ".checkpoints").iterdir())
    assert left == ["resumable", "training-elsewhere"]  # a live server's run is not touched
