"""bf16 weights packed for oneDNN (core/packed_weights.py): the registry packs them where the CPU
computes bf16 in hardware, and the packed layers compute what the plain ones do: the same greedy
text through the app's decoding batch, the same gradients with gradients on."""

from __future__ import annotations

import copy

import pytest
import torch

from core.decoding import DecodingBatch, DecodingRequest
from core.models import TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry
from core.packed_weights import PACKED_ATTRIBUTE, pack_linear_weights
from core.precision import Hardware
from core.threads import MODEL_THREAD

SMOLLM2 = "packaged:SmolLM2-135M-Instruct"
PROMPTS = ["The history of the city begins in", "The capital of France is", "Once upon a time, a small robot",
           "The best way to learn a language is"]


def packed_layers(model) -> int:
    return sum(hasattr(module, PACKED_ATTRIBUTE) for module in model.modules())


def linear_layers(model) -> int:
    return sum(type(module) is torch.nn.Linear for module in model.modules())


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_the_registry_packs_bf16_weights_only_where_the_cpu_computes_bf16(models_dir, fast_bf16):
    registry = ModelRegistry(models_dir, hardware=Hardware(cuda=False, cpu_fast_bf16=fast_bf16))
    bf16 = registry.get(TEXT_CLASSIFICATION, "tiny-bert-sentiment", "bf16").model
    fp32 = registry.get(TEXT_CLASSIFICATION, "tiny-bert-sentiment", "fp32").model
    assert linear_layers(bf16) > 0
    assert packed_layers(bf16) == (linear_layers(bf16) if fast_bf16 else 0)
    assert packed_layers(fp32) == 0  # float32 text must stay what it is
    # Module names and the state dict are the model's own (Inside's hooks and saving rely on them).
    assert list(bf16.state_dict()) == list(fp32.state_dict())


def greedy(model, tokenizer, prompt: str, tokens: int = 24) -> str:
    """The greedy continuation of `prompt` through the app's decoding batch."""
    batch = DecodingBatch(model, tokenizer, end_ids=set())
    request = DecodingRequest(prompts=[tokenizer(prompt)["input_ids"]], sequences=1, max_new_tokens=tokens,
                              temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, seeds=[0])
    batch.add(request)
    while not batch.idle:
        batch.step()
    texts = []
    while not request.updates.empty():
        update = request.updates.get()
        if isinstance(update, BaseException):
            raise update
        if update:
            texts.append(update[0])
    return "".join(texts)


@pytest.mark.real
def test_packed_bf16_writes_the_same_greedy_text_as_plain_bf16_on_smollm2(models_dir, smollm2_folder):
    registry = ModelRegistry(models_dir)
    float32 = registry.get(TEXT_GENERATION, SMOLLM2, "fp32")

    def compare():
        plain = copy.deepcopy(float32.model).to(torch.bfloat16)
        packed = copy.deepcopy(plain)
        assert pack_linear_weights(packed) == linear_layers(packed) > 200
        for prompt in PROMPTS:
            text = greedy(packed, float32.tokenizer, prompt)
            assert len(text) > 30 and text == greedy(plain, float32.tokenizer, prompt), prompt
        # With gradients on (Inside's attributions), a packed layer computes the plain way.
        ids = torch.tensor([float32.tokenizer(PROMPTS[0])["input_ids"]])
        with torch.enable_grad():
            assert torch.equal(packed(input_ids=ids).logits, plain(input_ids=ids).logits)

    MODEL_THREAD.run_model_work(compare)


def test_a_model_with_no_bf16_linear_layers_is_left_as_it_is(models_dir):
    model = ModelRegistry(models_dir).get(TEXT_GENERATION, "tiny-gpt2", "fp32").model
    assert pack_linear_weights(model) == 0 and packed_layers(model) == 0

