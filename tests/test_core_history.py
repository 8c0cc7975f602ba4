"""The run history file and the model-folder changes that follow it, without a server."""

from __future__ import annotations

import json
import shutil

import pytest

from core import history
from core.errors import WorkbenchError
from core.history import HISTORY_FILE, RunHistory
from core.model_folders import delete_model, rename_model
from core.models import ModelRegistry


class IdleRunner:
    """What rename and delete ask of the job runner: whether a run uses the model, and the run
    history they update."""

    def __init__(self, history: RunHistory):
        self.history = history

    def use_of(self, name):
        return None


class BusyRunner(IdleRunner):
    def use_of(self, name):
        return f"the current run saves to '{name}'" if name == "busy" else None


def entry(run_id, **fields):
    return {"id": run_id, "model_name": run_id, "saved_as": run_id, **fields}


def test_runs_are_kept_newest_first_replaced_by_id_and_capped(tmp_path, monkeypatch):
    runs = RunHistory(tmp_path)
    assert runs.runs() == []
    for run_id in ("a", "b", "c"):
        runs.record(entry(run_id, state="finished"))
    runs.record(entry("b", state="discarded"))  # its fate changed: the same entry, now newest
    assert [(run["id"], run["state"]) for run in RunHistory(tmp_path).runs()] == [
        ("b", "discarded"), ("c", "finished"), ("a", "finished")]
    monkeypatch.setattr(history, "MAX_RUNS", 2)
    runs.record(entry("d"))
    assert [run["id"] for run in runs.runs()] == ["d", "b"]


def test_a_history_changed_on_disk_is_read_again_and_a_broken_one_reads_as_empty(tmp_path):
    runs = RunHistory(tmp_path)
    runs.record(entry("a"))
    assert [run["id"] for run in runs.runs()] == ["a"]
    (tmp_path / HISTORY_FILE).write_text(json.dumps([entry("a"), entry("z")]))  # another server wrote it
    assert [run["id"] for run in runs.runs()] == ["z", "a"]
    (tmp_path / HISTORY_FILE).write_text("{not json")
    assert runs.runs() == []
    runs.record(entry("fresh"))
    assert [run["id"] for run in runs.runs()] == ["fresh"]


def test_rename_and_delete_follow_in_the_history_and_stay_inside_the_models_folder(models_dir, tmp_path):
    own = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-gpt2", own / "story")
    outside = tmp_path / "precious"
    outside.mkdir()
    (own / "link-out").symlink_to(outside, target_is_directory=True)
    registry, runs = ModelRegistry(own), RunHistory(own)
    runs.record(entry("story"))
    rename_model(registry, IdleRunner(runs), "story", "tale")
    assert (own / "tale").is_dir() and runs.runs()[0]["saved_as"] == "tale"
    delete_model(registry, IdleRunner(runs), "tale")
    assert not (own / "tale").exists() and runs.runs()[0]["deleted"] == "tale"
    for name in ("link-out", "..", "../precious", "", "nothing-here"):
        with pytest.raises(WorkbenchError, match="no model named"):
            delete_model(registry, IdleRunner(runs), name)
    assert outside.is_dir()
    (own / "busy").mkdir()
    with pytest.raises(WorkbenchError, match="'busy' is in use: the current run saves to 'busy'"):
        rename_model(registry, BusyRunner(runs), "busy", "other")
    assert (own / "busy").is_dir()
