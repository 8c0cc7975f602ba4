"""Inference wrappers on real (tiny) transformers models: generation, sentiment, fill-mask."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from core import inference
from core.errors import WorkbenchError
from core.inference import GenerationSettings
from core.limits import CLASSIFY_BATCH_SIZE, MAX_BATCH_ROWS, MAX_NEW_TOKENS
from core.models import TEXT_CLASSIFICATION
from core.threads import MODEL_THREAD
from tiny_models import corpus

CORPUS_WORDS = {word.strip(".").lower() for sentence in corpus() for word in sentence.split()}


def final_text(registry, model, prompt, **settings):
    *_, last = inference.generate_stream(registry, model, prompt, GenerationSettings(**settings))
    return last


# ----- generation ------------------------------------------------------------------------------
def test_generation_streams_growing_text_that_continues_the_prompt(registry):
    updates = list(inference.generate_stream(
        registry, "tiny-gpt2", "The cat likes", GenerationSettings(max_new_tokens=40, seed=3)))
    assert len(updates) >= 3, "tokens should arrive in several chunks"
    texts = [update[0] for update in updates]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert texts[-1].startswith("The cat likes") and len(texts[-1]) > len("The cat likes") + 20
    new_words = [w.strip(".").lower() for w in texts[-1][len("The cat likes"):].split()]
    assert sum(word in CORPUS_WORDS for word in new_words) >= len(new_words) // 2


def test_same_seed_and_settings_give_the_same_text(registry):
    first = final_text(registry, "tiny-gpt2", "A dog", max_new_tokens=30, temperature=1.2, seed=7)
    again = final_text(registry, "tiny-gpt2", "A dog", max_new_tokens=30, temperature=1.2, seed=7)
    others = {final_text(registry, "tiny-gpt2", "A dog", max_new_tokens=30, temperature=1.2, seed=s)[0]
              for s in (8, 9, 10)}
    assert first == again
    assert others - {first[0]}, "other seeds should give other texts"


def test_several_sequences_are_returned_and_differ(registry):
    texts = final_text(registry, "tiny-gpt2", "The farmer", max_new_tokens=30, temperature=1.5,
                       num_sequences=3, seed=1)
    assert len(texts) == 3 and all(text.startswith("The farmer") for text in texts)
    assert len(set(texts)) > 1


def test_chat_mode_sends_the_prompt_through_the_chat_template(registry):
    chat_pipe = registry.get("text-generation", "tiny-chat")
    assert "<|user|>" in chat_pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    reply = final_text(registry, "tiny-chat", "The cat", max_new_tokens=10, temperature=0,
                       use_chat_template=True)[0]
    plain = final_text(registry, "tiny-chat", "The cat", max_new_tokens=10, temperature=0)[0]
    assert not reply.startswith("The cat") and reply.strip()
    assert plain.startswith("The cat")


def test_chat_mode_on_a_model_without_template_is_refused(registry):
    assert not inference.has_chat_template(registry, "tiny-gpt2")
    with pytest.raises(WorkbenchError, match="no chat template"):
        final_text(registry, "tiny-gpt2", "Hello", use_chat_template=True)


def test_a_stop_request_ends_generation_early(registry):
    stop = threading.Event()
    updates = []
    for update in inference.generate_stream(registry, "tiny-gpt2", "The cat",
                                            GenerationSettings(max_new_tokens=120, seed=1),
                                            should_stop=stop.is_set):
        updates.append(update[0])
        stop.set()
    full = final_text(registry, "tiny-gpt2", "The cat", max_new_tokens=120, seed=1)[0]
    assert len(updates[-1]) < len(full) / 2


def test_closing_the_stream_stops_the_model_within_a_step_or_two(registry):
    model = registry.get("text-generation", "tiny-gpt2").model
    steps = []
    handle = _generate_calls(model, steps)
    try:
        stream = inference.generate_stream(registry, "tiny-gpt2", "The cat",
                                           GenerationSettings(max_new_tokens=MAX_NEW_TOKENS))
        next(stream)
        stream.close()  # what the Stop button does to the handler's iterator
        # Work asked of the model thread runs between two steps: after two such rounds the step
        # that saw the stop has run, and the row has left.
        MODEL_THREAD.run_model_work(lambda: None)
        assert MODEL_THREAD.rows_generating() == 0
    finally:
        handle.remove()
    assert len(steps) < 10 < MAX_NEW_TOKENS


def test_several_sequences_are_one_batch_and_each_is_the_text_its_seed_gives_alone(registry):
    """Sequence i samples with seed + i: in a batch of three it is the text one sequence with
    that seed gives, and the batch is the same again with the same seed."""
    sampled = dict(max_new_tokens=25, temperature=1.3, seed=11)
    batch = final_text(registry, "tiny-gpt2", "The farmer", num_sequences=3, **sampled)
    alone = [final_text(registry, "tiny-gpt2", "The farmer", **(sampled | {"seed": 11 + i}))[0] for i in range(3)]
    assert batch == alone and len(set(batch)) == 3
    assert final_text(registry, "tiny-gpt2", "The farmer", num_sequences=3, **sampled) == batch


def _generate_calls(model, calls: list):
    """Watch the model's forward passes: the (rows, tokens) of the input ids of each."""
    def record(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(tuple(ids.shape))

    return model.register_forward_pre_hook(record, with_kwargs=True)


def test_all_sequences_of_all_prompts_run_in_one_batch_that_reads_each_prompt_once(registry):
    model = registry.get("text-generation", "tiny-gpt2").model
    calls = []
    handle = _generate_calls(model, calls)
    try:
        *_, texts = inference.generate_streams(registry, "tiny-gpt2", ["The red house is", "A dog"],
                                               GenerationSettings(max_new_tokens=6, temperature=1.0, seed=2,
                                                                  num_sequences=3))
    finally:
        handle.remove()
    longest = len(registry.get("text-generation", "tiny-gpt2").tokenizer("The red house is")["input_ids"])
    # The two prompts' tokens read once (not once per sequence), which also gives each row its
    # first token; then every step for all six rows.
    assert calls[0] == (2, longest)
    assert set(calls[1:]) == {(6, 1)} and len(calls[1:]) <= 5
    assert [len(sequences) for sequences in texts] == [3, 3]
    assert all(text.startswith("The red house is") for text in texts[0])
    assert all(text.startswith("A dog") for text in texts[1])


def test_two_prompts_grow_together_and_each_is_what_it_gives_alone(registry):
    greedy = GenerationSettings(max_new_tokens=20, temperature=0)
    prompts = ["The red house is", "A dog"]  # of different lengths: the shorter is padded
    updates = list(inference.generate_streams(registry, "tiny-gpt2", prompts, greedy))
    alone = [final_text(registry, "tiny-gpt2", prompt, max_new_tokens=20, temperature=0) for prompt in prompts]
    assert updates[-1] == alone
    # Both outputs stream: already in the first update each has text of its own.
    first = updates[0]
    assert all(len(texts[0]) > len(prompt) for texts, prompt in zip(first, prompts))
    assert len(updates) >= 5


def test_a_stop_request_ends_every_sequence_of_every_prompt(registry):
    stop = threading.Event()
    tokens_made = []
    settings = GenerationSettings(max_new_tokens=120, seed=1, num_sequences=3)
    updates = []
    for update in inference.generate_streams(registry, "tiny-gpt2", ["The cat", "A bird"], settings,
                                             should_stop=lambda: tokens_made.append(1) or stop.is_set()):
        updates.append(update)
        stop.set()
    # The step that saw the request was about the last, for all six rows (the model thread may
    # make a few more tiny-model steps before this loop sets the request).
    assert len(tokens_made) < 10 < settings.max_new_tokens
    full = inference.generate_streams(registry, "tiny-gpt2", ["The cat", "A bird"], settings)
    *_, finished = full
    for stopped_texts, finished_texts in zip(updates[-1], finished):
        assert all(len(stopped) < len(done) for stopped, done in zip(stopped_texts, finished_texts))


def test_a_long_prompt_is_cut_to_the_model_context_instead_of_failing(registry):
    text = final_text(registry, "tiny-gpt2", "the red house " * 200, max_new_tokens=20, seed=0)[0]
    assert len(text) > len("the red house " * 200)


@pytest.mark.parametrize("settings, message", [
    (dict(max_new_tokens=-5), "Max new tokens"),
    (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "Max new tokens"),
    (dict(top_p=2), "Top-p"),
    (dict(top_p=0), "Top-p"),
    (dict(temperature=-1), "Temperature"),
    (dict(num_sequences=50), "Number of sequences"),
    (dict(repetition_penalty=0.5), "Repetition penalty"),
    (dict(seed=1.5), "Seed"),
])
def test_out_of_range_settings_are_refused_with_the_setting_named(settings, message):
    with pytest.raises(WorkbenchError, match=message):
        GenerationSettings(**settings)


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_an_empty_prompt_is_refused(registry, prompt):
    with pytest.raises(WorkbenchError, match="empty"):
        final_text(registry, "tiny-gpt2", prompt)


# ----- sentiment -------------------------------------------------------------------------------
def test_classify_returns_every_class_sorted_by_confidence(registry):
    scores = inference.classify(registry, "tiny-bert-sentiment", "I loved the quiet village.")
    assert set(scores) == {"negative", "positive"}
    values = list(scores.values())
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0, abs=1e-4)


def test_batch_scoring_runs_in_batches_and_keeps_rows_in_place(registry):
    texts = [f"Row {i}: the old bridge" for i in range(70)]
    texts[5] = "   "
    model = registry.get(TEXT_CLASSIFICATION, "tiny-bert-sentiment").model
    forward_calls = []
    hook = model.register_forward_hook(lambda module, args, output: forward_calls.append(1))
    try:
        scored = inference.classify_batch(registry, "tiny-bert-sentiment", texts)
    finally:
        hook.remove()
    assert len(forward_calls) == -(-69 // CLASSIFY_BATCH_SIZE)  # 69 non-empty rows, not 69 calls
    assert [row.text for row in scored] == texts
    assert scored[5].label == "" and all(row.label in {"negative", "positive"}
                                         for i, row in enumerate(scored) if i != 5)
    single = inference.classify(registry, "tiny-bert-sentiment", texts[0])
    assert scored[0].score == pytest.approx(max(single.values()), abs=1e-4)


def test_batch_scoring_refuses_more_rows_than_the_limit(registry):
    with pytest.raises(WorkbenchError, match=f"Too many rows.*{MAX_BATCH_ROWS:,}"):
        inference.classify_batch(registry, "tiny-bert-sentiment", ["text"] * (MAX_BATCH_ROWS + 1))


# ----- fill-mask -------------------------------------------------------------------------------
@pytest.mark.parametrize("model, written", [
    ("tiny-bert-mlm", "[MASK]"), ("tiny-bert-mlm", "<mask>"),
    ("tiny-roberta-mlm", "[MASK]"), ("tiny-roberta-mlm", "<mask>"),
])
def test_either_mask_spelling_becomes_the_models_own_mask(registry, model, written):
    predictions = inference.fill_mask(registry, model, f"The cat {written} the red house.", top_k=4)
    assert len(predictions) == 1 and len(predictions[0]) == 4
    mask_token = registry.get("fill-mask", model).tokenizer.mask_token
    for prediction in predictions[0]:
        assert mask_token not in prediction.sequence and written not in prediction.sequence
        assert prediction.token in prediction.sequence.replace(" ", "").replace("##", "") or \
            prediction.token.startswith("##") or prediction.token.startswith("'")
    scores = [p.score for p in predictions[0]]
    assert scores == sorted(scores, reverse=True)


def test_a_model_that_ranks_its_own_markers_first_fills_the_mask_with_words(tmp_path):
    from core.models import ModelRegistry
    from tiny_models import build_bert_mlm
    from transformers import AutoTokenizer, BertForMaskedLM

    folder = build_bert_mlm(tmp_path / "marker-mlm")
    model, tokenizer = BertForMaskedLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():  # [MASK], [CLS], [PAD]... far ahead of every word
        model.cls.predictions.bias[tokenizer.all_special_ids] = 100.0
    model.save_pretrained(folder)
    predictions = inference.fill_mask(ModelRegistry(tmp_path), "marker-mlm", "The cat [MASK] the red house.",
                                      top_k=4)
    assert len(predictions[0]) == 4
    shown = {prediction.token for prediction in predictions[0]}
    assert not shown & set(tokenizer.all_special_tokens), shown


def test_each_of_several_masks_gets_its_own_predictions(registry):
    predictions = inference.fill_mask(registry, "tiny-bert-mlm", "[MASK] cat sees the [MASK] house.", top_k=3)
    assert [len(p) for p in predictions] == [3, 3]
    assert [p[0].mask_index for p in predictions] == [1, 2]
    # Each prediction fills its own mask and leaves the other one masked. The untrained model's
    # scores are near ties, so [MASK] itself can be a top guess: then it is in the text twice.
    first, second = predictions
    assert all(p.sequence.endswith(" the [MASK] house.") for p in first), first
    assert all(p.sequence.startswith("[MASK] cat sees the") for p in second), second
    assert all(p.sequence.count("[MASK]") == 1 + (p.token == "[MASK]") for group in predictions for p in group)


def test_text_without_a_mask_is_refused(registry):
    with pytest.raises(WorkbenchError, match="no mask"):
        inference.fill_mask(registry, "tiny-bert-mlm", "The cat sees the house.")


@pytest.mark.parametrize("top_k", [0, 21, 2.5])
def test_top_k_outside_1_to_20_is_refused(registry, top_k):
    with pytest.raises(WorkbenchError, match="Top-k"):
        inference.fill_mask(registry, "tiny-bert-mlm", "The [MASK] house.", top_k=top_k)


def test_sampling_keeps_the_tokens_transformers_top_k_then_top_p_keep():
    """Top-p is applied to the top-k candidates only (faster); the tokens left to sample from,
    and their scores, are those of transformers' own two warpers one after the other."""
    import torch
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from core.decoding import _warped

    settings = SimpleNamespace(temperature=1.0, top_k=50, top_p=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        scores = torch.randn(3, 5000, generator=generator) * 3
        expected = TopPLogitsWarper(0.9)(None, TopKLogitsWarper(50)(None, scores.clone()))
        got = _warped(scores.clone(), settings)
        kept = ~torch.isinf(expected)
        assert torch.equal(kept, ~torch.isinf(got)) and 1 < kept.sum(-1).min() and kept.sum(-1).max() <= 50
        assert torch.equal(expected[kept], got[kept])


def test_the_filled_sentence_is_the_text_as_typed_with_the_word_in_place(registry):
    text = "The Capital of  FRANCE is [MASK]!  Or <mask>?"
    first, second = inference.fill_mask(registry, "tiny-bert-mlm", text, top_k=3)
    for prediction in first:  # case, double spaces and the other mask as typed
        word = prediction.token.removeprefix("##")
        joined = "is" + word if prediction.token.startswith("##") else "is " + word
        assert prediction.sequence == f"The Capital of  FRANCE {joined}!  Or <mask>?"
    for prediction in second:  # the first mask stays as typed
        word = prediction.token.removeprefix("##")
        joined = "Or" + word if prediction.token.startswith("##") else "Or " + word
        assert prediction.sequence == f"The Capital of  FRANCE is [MASK]!  {joined}?"


def test_a_masked_lm_whose_head_started_untrained_gets_a_warning(registry, models_dir, tmp_path):
    import json
    import shutil

    from core.models import ModelRegistry

    assert inference.untrained_head_note(registry, "tiny-bert-mlm") is None  # not fine-tuned here
    shutil.copytree(models_dir / "tiny-bert-mlm", tmp_path / "minilm-mlm")
    (tmp_path / "minilm-mlm" / "metrics.json").write_text(json.dumps(
        {"base_model": "packaged:all-MiniLM-L6-v2", "untrained_head": True, "after": {"perplexity": 4321.5}}))
    note = inference.untrained_head_note(ModelRegistry(tmp_path), "minilm-mlm")
    assert "fine-tuned from packaged:all-MiniLM-L6-v2" in note and "4,322" in note and "same top words" in note
