"""On a Hugging Face Space with persistent storage, models and the Hub cache go to /data."""

from __future__ import annotations

from core.spaces import use_persistent_storage


def test_a_space_with_persistent_storage_keeps_models_and_the_hub_cache_there(tmp_path):
    environ = {"SPACE_ID": "teacher/workbench"}
    assert use_persistent_storage(environ, tmp_path) == ["WORKBENCH_MODELS_DIR", "HF_HOME"]
    assert environ["WORKBENCH_MODELS_DIR"] == str(tmp_path / "models")
    assert environ["HF_HOME"] == str(tmp_path / ".huggingface")


def test_the_spaces_own_variables_win_and_elsewhere_nothing_changes(tmp_path):
    environ = {"SPACE_ID": "teacher/workbench", "WORKBENCH_MODELS_DIR": "/elsewhere"}
    assert use_persistent_storage(environ, tmp_path) == ["HF_HOME"]
    assert environ["WORKBENCH_MODELS_DIR"] == "/elsewhere"
    assert use_persistent_storage({}, tmp_path) == []  # not a Space
    assert use_persistent_storage({"SPACE_ID": "x"}, tmp_path / "absent") == []  # no storage
