"""On a Hugging Face Space with persistent storage, models and the Hub cache go to /data; on one
with sign-in, a person is their Hugging Face login."""

from __future__ import annotations

import time

from core.spaces import hf_login_offered, hf_username, use_persistent_storage


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


def test_sign_in_is_offered_only_on_a_space_that_asks_for_it():
    space = {"SYSTEM": "spaces", "SPACE_ID": "teacher/workbench"}
    assert hf_login_offered({**space, "OAUTH_CLIENT_ID": "id"})
    assert not hf_login_offered(space)  # no `hf_oauth: true` in its metadata
    assert not hf_login_offered({"SPACE_ID": "teacher/workbench", "OAUTH_CLIENT_ID": "id"})  # not run by Spaces


def test_the_signed_in_login_is_read_until_it_expires():
    def session(expires_at):
        return {"oauth_info": {"expires_at": expires_at, "userinfo": {"preferred_username": "ann"}}}

    assert hf_username(session(time.time() + 60)) == "ann"
    assert hf_username(session(time.time() - 60)) is None
    assert hf_username({}) is None and hf_username({"oauth_info": None}) is None
