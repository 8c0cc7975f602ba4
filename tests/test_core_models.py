"""Model registry: listing per task, validation, lazy cached loading, clear failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO_ROOT, fake_hub_answering, separable_csv, silent_hub
from core.errors import WorkbenchError
from core.hub import Hub
from core.models import (
    DEFAULT_HUB_MODELS, FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry,
)


def names(registry, task):
    return [choice.name for choice in registry.choices(task)]


def test_each_task_lists_its_local_models_then_the_hub_defaults(registry):
    assert names(registry, TEXT_GENERATION) == ["packaged:SmolLM2-135M-Instruct", "tiny-chat", "tiny-gpt2",
                                                *DEFAULT_HUB_MODELS[TEXT_GENERATION]]
    assert names(registry, TEXT_CLASSIFICATION) == ["tiny-bert-sentiment", *DEFAULT_HUB_MODELS[TEXT_CLASSIFICATION]]
    assert names(registry, FILL_MASK) == ["tiny-bert-mlm", "tiny-roberta-mlm", *DEFAULT_HUB_MODELS[FILL_MASK]]
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in names(registry, TEXT_GENERATION)


def test_a_model_copied_into_the_folder_is_listed_without_a_restart(models_dir, tmp_path):
    own_dir = tmp_path / "models"
    own_dir.mkdir()
    registry = ModelRegistry(own_dir)
    assert "my-gpt2" not in names(registry, TEXT_GENERATION)
    shutil.copytree(models_dir / "tiny-gpt2", own_dir / "my-gpt2")
    assert "my-gpt2" in names(registry, TEXT_GENERATION)
    assert registry.get(TEXT_GENERATION, "my-gpt2").model.config.model_type == "gpt2"


@pytest.mark.parametrize("bad_name", ["../tiny-gpt2", "/etc/passwd", "a/b/c", "..", "org/..", "x" * 300, "a b"])
def test_names_that_are_neither_hub_ids_nor_folders_are_refused(registry, bad_name):
    with pytest.raises(WorkbenchError, match="not a model name"):
        registry.get(TEXT_GENERATION, bad_name)


def test_a_link_that_points_outside_the_models_folder_is_not_a_local_model(models_dir, tmp_path):
    own_dir = tmp_path / "models"
    own_dir.mkdir()
    (own_dir / "escape").symlink_to(models_dir / "tiny-gpt2")
    registry = ModelRegistry(own_dir)
    assert registry.resolve("escape") == ("hub", None)


def test_a_model_picked_for_the_wrong_task_names_the_right_panel(registry):
    with pytest.raises(WorkbenchError, match="tiny-bert-mlm.*fill-mask model"):
        registry.get(TEXT_GENERATION, "tiny-bert-mlm")


def test_broken_folders_are_listed_as_unusable_with_the_reason_and_fail_with_it(models_dir, tmp_path):
    own_dir = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-gpt2", own_dir / "no-weights")
    (own_dir / "no-weights" / "model.safetensors").unlink()
    shutil.copytree(models_dir / "tiny-gpt2", own_dir / "bad-config")
    (own_dir / "bad-config" / "config.json").write_text("{ not json")
    shutil.copytree(models_dir / "tiny-gpt2", own_dir / "pickle-only")
    (own_dir / "pickle-only" / "model.safetensors").rename(own_dir / "pickle-only" / "pytorch_model.bin")
    (own_dir / "empty-folder").mkdir()
    registry = ModelRegistry(own_dir)
    labels = {choice.name: choice.label for choice in registry.choices(TEXT_GENERATION)}
    assert labels["bad-config"] == "bad-config (unusable: config.json is not valid JSON)"
    assert labels["empty-folder"] == "empty-folder (unusable: no config.json)"
    assert labels["no-weights"].startswith("no-weights (unusable: no safetensors weights")
    assert labels["pickle-only"].startswith("pickle-only (unusable: no safetensors weights")
    broken = {"bad-config", "empty-folder", "no-weights", "pickle-only"}
    assert registry.default_choice(TEXT_GENERATION) not in broken
    assert all(not choice.ready for choice in registry.choices(TEXT_GENERATION) if choice.name in broken)
    with pytest.raises(WorkbenchError, match="bad-config.*not valid JSON"):
        registry.get(TEXT_GENERATION, "bad-config")
    for name in ("no-weights", "pickle-only"):
        with pytest.raises(WorkbenchError, match=f"{name}.*no safetensors weights"):
            registry.get(TEXT_GENERATION, name)


def test_remote_code_in_a_model_folder_is_never_run(models_dir, tmp_path):
    own_dir = tmp_path / "models"
    folder = own_dir / "custom-code"
    shutil.copytree(models_dir / "tiny-gpt2", folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WorkbenchError, match="custom-code"):
        ModelRegistry(own_dir).get(TEXT_GENERATION, "custom-code")
    assert not marker.exists()


def test_two_simultaneous_first_requests_load_the_model_once(models_dir):
    registry = ModelRegistry(models_dir)
    start = threading.Barrier(4)
    results = []

    def request():
        start.wait()
        results.append(registry.get(TEXT_CLASSIFICATION, "tiny-bert-sentiment"))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(result is results[0] for result in results)
    assert registry.load_count == 1


def test_loaded_models_are_capped_and_the_least_recently_used_is_evicted(models_dir):
    registry = ModelRegistry(models_dir, max_loaded=2)
    registry.get(TEXT_GENERATION, "tiny-gpt2")
    registry.get(FILL_MASK, "tiny-bert-mlm")
    registry.get(TEXT_GENERATION, "tiny-gpt2")  # now the most recently used
    registry.get(FILL_MASK, "tiny-roberta-mlm")
    assert registry.loaded() == [(TEXT_GENERATION, "tiny-gpt2"), (FILL_MASK, "tiny-roberta-mlm")]
    assert registry.load_count == 3


def test_an_unreachable_hub_gives_a_clear_message_naming_the_model(registry):
    """The Hub is unreachable in the tests (conftest): a Hub model fails with a message, at once."""
    with pytest.raises(WorkbenchError, match="distilbert/distilgpt2.*cannot be reached"):
        registry.get(TEXT_GENERATION, "distilbert/distilgpt2")


@pytest.fixture
def fake_hub(monkeypatch):
    """A local HTTP endpoint standing in for the Hub's file server: 404 for every file."""
    with fake_hub_answering(monkeypatch, 404) as server:
        yield server


def test_an_unknown_hub_id_is_reported_as_not_found(registry, fake_hub):
    with pytest.raises(WorkbenchError, match="no-such-org/no-such-model.*no such model"):
        registry.get(TEXT_GENERATION, "no-such-org/no-such-model")


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """Nobody logged in: no HF_TOKEN, and `hf auth login`'s token file (huggingface_hub reads it
    at each call) points at an empty place."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    return tmp_path / "hf-token"


@pytest.mark.parametrize("status, headers, expected", [
    (401, {}, "needs a token.*hf auth login"),
    (401, {"X-Error-Code": "GatedRepo"}, "no access to this model yet.*Request access"),
    (403, {}, "no access to this model yet.*Request access on http"),
])
def test_a_hub_that_wants_a_token_or_access_says_so_not_no_such_model(registry, monkeypatch, no_token, status,
                                                                        headers, expected):
    with fake_hub_answering(monkeypatch, status, headers):
        with pytest.raises(WorkbenchError, match=f"meta-llama/Llama-3.2-1B.*{expected}") as refused:
            registry.get(TEXT_GENERATION, "meta-llama/Llama-3.2-1B")
    assert "no such model" not in str(refused.value)


def test_the_token_saved_by_hf_auth_login_is_sent_and_a_refused_one_is_named(registry, monkeypatch, no_token):
    no_token.write_text("hf_saved_by_login")  # where `hf auth login` keeps it
    with fake_hub_answering(monkeypatch, 401) as hub:
        with pytest.raises(WorkbenchError, match="refused your token.*Log in again"):
            registry.get(TEXT_GENERATION, "my-org/private-model")
    assert hub.authorizations == ["Bearer hf_saved_by_login"]
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")  # HF_TOKEN wins, as in huggingface_hub
    with fake_hub_answering(monkeypatch, 404) as hub:
        with pytest.raises(WorkbenchError, match="no such model"):
            registry.get(TEXT_GENERATION, "my-org/private-model")
    assert hub.authorizations == ["Bearer hf_from_the_environment"]


def test_no_token_is_sent_when_nobody_logged_in(registry, monkeypatch, no_token, fake_hub):
    with pytest.raises(WorkbenchError):
        registry.get(TEXT_GENERATION, "no-such-org/no-such-model")
    assert fake_hub.authorizations == [None]


def test_a_hub_that_accepts_but_never_answers_is_asked_once_and_given_up_on(models_dir, monkeypatch):
    """One question with a timeout, no retries: from_pretrained alone would retry for half a
    minute against such a server."""
    registry = ModelRegistry(models_dir, hub=Hub(check_timeout=0.3))
    with silent_hub(monkeypatch) as connections:
        with pytest.raises(WorkbenchError, match="openai-community/gpt2.*cannot be reached.*Timeout"):
            registry.get(TEXT_GENERATION, "openai-community/gpt2")
        assert len(connections) == 1


def test_offline_mode_explains_the_model_is_not_cached(registry, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkbenchError, match="google-bert/bert-base-uncased.*HF_HUB_OFFLINE"):
        registry.get(FILL_MASK, "google-bert/bert-base-uncased")


def _resident_mb() -> float:
    import gc

    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_stays_bounded_while_models_are_switched_again_and_again(models_dir):
    registry = ModelRegistry(models_dir, max_loaded=2)
    rotation = [(TEXT_GENERATION, "tiny-gpt2"), (TEXT_GENERATION, "tiny-chat"),
                (FILL_MASK, "tiny-bert-mlm"), (FILL_MASK, "tiny-roberta-mlm"),
                (TEXT_CLASSIFICATION, "tiny-bert-sentiment")]
    for task, name in rotation * 2:  # warm up: libraries, allocator pools
        registry.get(task, name)
    settled = _resident_mb()
    for task, name in rotation * 8:
        registry.get(task, name)
        assert len(registry.loaded()) <= 2
    grown = _resident_mb() - settled
    # 40 more loads of five models: evicted pipelines are freed, so memory does not climb.
    assert grown < 60, f"resident memory grew by {grown:.0f} MB"


def test_models_loading_at_once_in_a_fresh_process_all_find_transformers_set_up(models_dir, tmp_path):
    """Two panels' first models loading at the same moment used to meet a half-set-up
    transformers ("module 'transformers' has no attribute 'AutoTokenizer'"). So did a person
    previewing an upload meanwhile: datasets looks up transformers.PreTrainedTokenizerBase
    whenever transformers is in sys.modules."""
    upload = separable_csv(tmp_path / "upload.csv")
    script = f"""
import threading
import datasets  # imported before the models load, as after a first preview
from core.data import load_training_data
from core.models import ModelRegistry
registry = ModelRegistry({str(models_dir)!r})
failures, reads, loading = [], [], []
def load(task, name):
    try:
        registry.get(task, name)
    except Exception as error:
        failures.append(repr(error))
def read_upload_while_models_load():
    while any(thread.is_alive() for thread in loading):
        try:
            reads.append(len(load_training_data("classification", {str(upload)!r}).train))
        except Exception as error:
            failures.append(repr(error))
jobs = [("text-generation", "tiny-gpt2"), ("text-classification", "tiny-bert-sentiment"),
        ("fill-mask", "tiny-bert-mlm"), ("question-answering", "tiny-bert-qa")]
loading += [threading.Thread(target=load, args=job) for job in jobs]
reader = threading.Thread(target=read_upload_while_models_load)
[thread.start() for thread in loading]
reader.start()
[thread.join() for thread in loading + [reader]]
print(bool(reads), failures)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True []"
