"""Runs logged to a local dashboard through Accelerate's trackers (trackio, TensorBoard), read
back with each tracker's own reader."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, separable_csv
from core.errors import WorkbenchError
from core.training import TRACKING_PROJECT, TrainConfig, tracking_hint, train


def settings(models_dir, tmp_path, **values) -> TrainConfig:
    return TrainConfig(**{**dict(task="classification", base_model="tiny-bert-sentiment", models_dir=str(models_dir),
                                 train_file=str(separable_csv(tmp_path / "w.csv")), epochs=2, batch_size=8,
                                 learning_rate=3e-3, max_length=32, seed=0, validation_share=0.25), **values})


def test_tensorboard_gets_every_step_s_loss_and_every_evaluation(models_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tensorboard"
    result = train(settings(models_dir, tmp_path, report_to="tensorboard", tracking_dir=str(logs), run_name="weather"))
    (run_folder,) = [folder for folder in logs.iterdir() if folder.name.startswith("weather-")]
    events = EventAccumulator(str(run_folder)).Reload()
    losses = events.Scalars("train/loss")
    assert [point.step for point in losses] == list(range(1, result.steps_done + 1))
    # Before training, then each of the 2 epochs' ends.
    accuracies = [point.value for point in events.Scalars("eval/accuracy")]
    assert len(accuracies) == 3 and accuracies[-1] == pytest.approx(result.evaluations[-1]["metrics"]["accuracy"])
    assert "tensorboard --logdir" in tracking_hint(result.config)


def test_trackio_logs_the_run_under_its_name_from_the_command_line(models_dir, tmp_path):
    folder = tmp_path / "trackio"
    command = [sys.executable, "-m", "core.training", "--task", "classification", "--model", "tiny-bert-sentiment",
               "--models-dir", str(models_dir), "--train", str(separable_csv(tmp_path / "w.csv")), "--epochs", "2",
               "--batch-size", "8", "--max-length", "32", "--report-to", "trackio", "--tracking-dir", str(folder),
               "--run-name", "weather-cli"]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRACKIO_DIR": str(tmp_path / "not-here")})  # the flag wins
    assert run.returncode == 0, run.stderr[-2000:]
    with sqlite3.connect(folder / f"{TRACKING_PROJECT}.db") as database:
        tables = {row[0] for row in database.execute("select name from sqlite_master where type='table'")}
        assert "metrics" in tables, tables
        rows = database.execute("select run_name, metrics from metrics").fetchall()
    assert {name for name, _ in rows} == {"weather-cli"}
    logged = " ".join(metrics.decode() if isinstance(metrics, bytes) else metrics for _, metrics in rows)
    assert "train/loss" in logged and "eval/macro_f1" in logged


def test_an_unknown_or_missing_tracker_is_refused_with_what_to_do(models_dir, tmp_path, monkeypatch):
    import importlib.util

    with pytest.raises(WorkbenchError, match="report_to must be one of none, trackio, tensorboard"):
        settings(models_dir, tmp_path, report_to="wandb")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real_find_spec(name, *a))
    with pytest.raises(WorkbenchError, match="pip install tensorboard"):
        train(settings(models_dir, tmp_path, report_to="tensorboard", tracking_dir=str(tmp_path / "tb")))
