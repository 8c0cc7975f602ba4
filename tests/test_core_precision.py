"""Inference precision: what the automatic choice picks on described hardware, and that a forced
precision is the dtype the loaded model really computes in."""

from __future__ import annotations

import pytest
import torch

from core import inference
from core.errors import WorkbenchError
from core.inference import GenerationSettings
from core.models import TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry
from core.precision import BF16_AUTO_MIN_PARAMETERS, Hardware, choose_inference_precision

AMX_CPU = dict(cuda=False, cpu_fast_bf16=True)
OLD_CPU = dict(cuda=False, cpu_fast_bf16=False)  # bf16 emulated
BF16_GPU = dict(cuda=True, cuda_bf16=True)
OLD_GPU = dict(cuda=True, cuda_bf16=False)


def _weights(count: int) -> torch.nn.Module:
    return torch.nn.Linear(count, 1, bias=False)


@pytest.mark.parametrize("requested, hardware, weights, expected", [
    ("auto", AMX_CPU, BF16_AUTO_MIN_PARAMETERS, "bf16"),
    ("auto", AMX_CPU, 1000, "fp32"),  # a tiny model: the casts cost more than they save
    ("auto", OLD_CPU, BF16_AUTO_MIN_PARAMETERS, "fp32"),
    ("auto", BF16_GPU, BF16_AUTO_MIN_PARAMETERS, "bf16"),
    ("auto", OLD_GPU, BF16_AUTO_MIN_PARAMETERS, "fp32"),
    ("fp32", AMX_CPU, BF16_AUTO_MIN_PARAMETERS, "fp32"),
    ("bf16", OLD_CPU, 1000, "bf16"),  # forced: every CPU computes bf16, if slowly
    ("bf16", OLD_GPU, 1000, "fp32"),
])
def test_the_inference_precision_follows_the_hardware_and_the_request(requested, hardware, weights, expected):
    chosen, why = choose_inference_precision(requested, _weights(weights), Hardware(**hardware))
    assert chosen == expected
    assert why.startswith({"fp32": "float32", "bf16": "bf16"}[expected])


def test_a_forced_precision_says_where_it_is_slow_or_cannot_run():
    chosen, why = choose_inference_precision("bf16", _weights(10), Hardware(**OLD_CPU))
    assert (chosen, why) == ("bf16", "bf16, as asked; emulated: this CPU has no AMX or "
                                     "AVX512-BF16 to compute bf16 in hardware")
    assert choose_inference_precision("bf16", _weights(10), Hardware(**AMX_CPU)) == ("bf16", "bf16, as asked")
    chosen, why = choose_inference_precision("bf16", _weights(10), Hardware(**OLD_GPU))
    assert (chosen, why) == ("fp32", "float32: this GPU has no bf16")


def test_an_unknown_precision_is_refused(registry):
    with pytest.raises(WorkbenchError, match="Unknown precision 'fp8'"):
        registry.get(TEXT_GENERATION, "tiny-gpt2", "fp8")


@pytest.mark.parametrize("hardware", [AMX_CPU, OLD_CPU])
def test_a_forced_precision_is_the_dtype_the_model_computes_in(models_dir, hardware):
    here = Hardware(**hardware)  # each branch, on every machine
    registry = ModelRegistry(models_dir, hardware=here)
    as_bf16 = registry.get(TEXT_GENERATION, "tiny-gpt2", "bf16")
    as_fp32 = registry.get(TEXT_GENERATION, "tiny-gpt2", "fp32")
    assert (as_bf16.model.dtype, as_fp32.model.dtype) == (torch.bfloat16, torch.float32)
    assert as_bf16 is not as_fp32 and registry.load_count == 2
    # Automatic on a tiny model is float32 everywhere: it is the float32 copy, not another one;
    # the note says why.
    assert registry.get(TEXT_GENERATION, "tiny-gpt2") is as_fp32
    assert registry.load_count == 2
    assert len([key for key in registry.loaded() if key == (TEXT_GENERATION, "tiny-gpt2")]) == 1
    assert registry.precision_note(TEXT_GENERATION, "tiny-gpt2") == (
        f"float32, automatic: a model under {BF16_AUTO_MIN_PARAMETERS // 1_000_000}M weights runs faster in "
        f"float32" if here.cpu_fast_bf16 else f"float32, automatic: {here.describe_bf16()}")
    assert registry.precision_note(TEXT_GENERATION, "tiny-gpt2", "fp32") == "float32, as asked"


def test_generation_and_classification_run_in_bf16_when_asked(registry):
    *_, texts = inference.generate_stream(registry, "tiny-gpt2", "The cat",
                                          GenerationSettings(max_new_tokens=15, seed=4), precision="bf16")
    assert texts[0].startswith("The cat") and len(texts[0]) > len("The cat") + 10
    scores = inference.classify(registry, "tiny-bert-sentiment", "What a lovely day.", precision="bf16")
    assert registry.get(TEXT_CLASSIFICATION, "tiny-bert-sentiment", "bf16").model.dtype == torch.bfloat16
    assert abs(sum(scores.values()) - 1) < 1e-2
    in_fp32 = inference.classify(registry, "tiny-bert-sentiment", "What a lovely day.", precision="fp32")
    assert list(scores) == list(in_fp32)  # the same ranking; the numbers differ slightly
    assert max(abs(scores[label] - in_fp32[label]) for label in scores) < 0.05


def test_the_registry_default_precision_is_the_one_configured(models_dir):
    registry = ModelRegistry(models_dir, precision="fp32")
    registry.get(TEXT_GENERATION, "tiny-gpt2")
    assert registry.precision_note(TEXT_GENERATION, "tiny-gpt2") == "float32, as asked"
