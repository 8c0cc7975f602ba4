"""Question answering on real (tiny) models: span selection from an extractive model's logits,
long contexts in windows, "no answer", and a chat model's grounded answer."""

from __future__ import annotations

import shutil

import pytest
import torch

from core import answer as qa, chat_spans
from core.words import whole_words
from core.errors import WorkbenchError
from core.limits import MAX_ANSWER_TOKENS
from core.models import QUESTION_ANSWERING, ModelRegistry
from demos.common import offline_note
from tiny_models import corpus

CONTEXT = "the cat likes the red house. a dog reads a long book every day."
QUESTION = "what does the dog read?"


def test_the_answer_is_the_best_span_of_a_direct_forward_pass(registry):
    result = qa.answer(registry, "tiny-bert-qa", CONTEXT, QUESTION, top_k=3)
    assert result.way == qa.EXTRACTIVE and result.windows == 1
    loaded = registry.get(QUESTION_ANSWERING, "tiny-bert-qa")
    encoded = loaded.tokenizer(QUESTION, CONTEXT, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0]
    with torch.no_grad():
        out = loaded.model(**encoded)
    in_context = [s == 1 for s in encoded.sequence_ids(0)]
    allowed = torch.tensor(in_context)
    allowed[0] = True  # [CLS]: "no answer"
    p_start = torch.softmax(out.start_logits[0].masked_fill(~allowed, -1e9), -1)
    p_end = torch.softmax(out.end_logits[0].masked_fill(~allowed, -1e9), -1)
    best = max(((float(p_start[i] * p_end[j]), i, j) for i in range(len(in_context)) for j in range(len(in_context))
                if in_context[i] and in_context[j] and i <= j < i + MAX_ANSWER_TOKENS))
    score, i, j = best
    start, end = whole_words(CONTEXT, int(offsets[i, 0]), int(offsets[j, 1]))
    assert result.answer == CONTEXT[start:end]
    assert result.spans[0].score == pytest.approx(score, rel=1e-5)
    assert result.no_answer_score == pytest.approx(float(p_start[0] * p_end[0]), rel=1e-5)


def test_candidates_are_spans_of_the_context_best_first(registry):
    result = qa.answer(registry, "tiny-bert-qa", CONTEXT, QUESTION, top_k=5)
    assert len(result.spans) == 5
    scores = [span.score for span in result.spans]
    assert scores == sorted(scores, reverse=True)
    tokenizer = registry.get(QUESTION_ANSWERING, "tiny-bert-qa").tokenizer
    for span in result.spans:  # inside the context, never longer than the longest answer allowed
        assert 0 <= span.start < span.end <= len(CONTEXT) and span.text.strip()
        assert len(tokenizer(span.text, add_special_tokens=False)["input_ids"]) <= MAX_ANSWER_TOKENS


def test_a_long_context_is_read_in_overlapping_windows(registry):
    context = " ".join(corpus()[:60])  # far more than the tiny model's 128 positions
    result = qa.answer(registry, "tiny-bert-qa", context, QUESTION, top_k=10)
    assert result.windows > 2
    assert all(context[span.start:span.end] == span.text for span in result.spans)
    assert len({(span.start, span.end) for span in result.spans}) == len(result.spans), "overlaps counted once"


def test_a_model_that_points_at_cls_says_there_is_no_answer(tmp_path):
    """A SQuAD2-style abstention: the tiny model's output layer turned to favour the [CLS]
    position (its hidden state differs from every context token's), saved, and loaded the way
    users load a model."""
    import transformers

    source = tmp_path / "source"
    from tiny_models import build_bert_qa

    build_bert_qa(source)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(source)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    encoded = tokenizer(QUESTION, CONTEXT, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**encoded).last_hidden_state[0]
        direction = hidden[0] - hidden[1:].mean(dim=0)
        model.qa_outputs.weight.copy_(torch.stack([direction, direction]) * (20 / direction.norm() ** 2))
        model.qa_outputs.bias.zero_()
    models = tmp_path / "models"
    model.save_pretrained(models / "abstains")
    tokenizer.save_pretrained(models / "abstains")
    result = qa.answer(ModelRegistry(models), "abstains", CONTEXT, QUESTION, top_k=3)
    assert result.answer == ""
    assert result.no_answer_score > result.spans[0].score


def test_a_chat_model_answers_with_whole_words_copied_from_the_context_the_same_way_each_time(registry):
    first = qa.answer(registry, "tiny-chat", CONTEXT, QUESTION, top_k=5)
    chat_spans._LAST_PROMPTS.clear()  # read from scratch: the cached prompt must not change the answer
    again = qa.answer(registry, "tiny-chat", CONTEXT, QUESTION, top_k=5)
    assert first.way == qa.GENERATIVE and first.answer == first.spans[0].text and first == again
    tokenizer = registry.get("text-generation", "tiny-chat").tokenizer
    scores = [span.score for span in first.spans]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    for span in first.spans:  # words of the context, never cut, never starting or ending on punctuation
        assert CONTEXT[span.start:span.end] == span.text
        assert whole_words(CONTEXT, span.start, span.end) == (span.start, span.end)
        assert span.text[0].isalnum() and span.text[-1].isalnum()
        assert len(tokenizer(" " + span.text, add_special_tokens=False)["input_ids"]) <= chat_spans.SPAN_TOKENS


def test_stopping_a_chat_answer_between_steps_stops_the_model(registry):
    """Stop closes the steps: the model passes still to come are never made."""
    model = registry.get("text-generation", "tiny-chat").model
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert isinstance(list(qa.answer_steps(registry, "tiny-chat", CONTEXT, QUESTION))[-1], qa.Answer)
        whole = len(calls)
        calls.clear()
        chat_spans._LAST_PROMPTS.clear()  # read the prompt again, as the whole answer did the first time
        steps = qa.answer_steps(registry, "tiny-chat", CONTEXT, QUESTION)
        assert next(steps) == "Reading the context and the question…"  # said before the work
        assert next(steps) == "Weighing the likeliest answers…"  # the question's passes are done
        done = len(calls)
        steps.close()  # the Stop button
        assert 0 < done < whole and len(calls) == done  # the calibration's passes never ran
    finally:
        hook.remove()


def test_a_question_that_leaves_no_room_for_the_context_is_refused_clearly(registry):
    long_question = " ".join(corpus()[:11]) + "?"  # 477 characters, 106 tokens; the tiny model reads 128
    with pytest.raises(WorkbenchError, match=r"The question is \d+ tokens long.*reads 128 tokens at a time.*shorten"):
        qa.answer(registry, "tiny-bert-qa", CONTEXT, long_question)


def test_question_answering_refuses_what_it_cannot_do(registry):
    with pytest.raises(WorkbenchError, match="The question is empty"):
        qa.answer(registry, "tiny-bert-qa", CONTEXT, " ")
    with pytest.raises(WorkbenchError, match="Answers to list must be from 1"):
        qa.answer(registry, "tiny-bert-qa", CONTEXT, QUESTION, top_k=0)
    with pytest.raises(WorkbenchError, match="A chat model answers from at most"):
        qa.answer(registry, "tiny-chat", "the cat likes the red house. " * 200, QUESTION)
    with pytest.raises(WorkbenchError, match="for question answering: it is a fill-mask model"):
        qa.answer(registry, "tiny-bert-mlm", CONTEXT, QUESTION)
    assert qa.answer(registry, "tiny-bert-qa", CONTEXT, QUESTION).spans, "still serving"


def test_the_picker_offers_extractive_models_first_then_chat_models(models_dir, tmp_path):
    registry = ModelRegistry(models_dir)
    names = [choice.name for choice in registry.choices(QUESTION_ANSWERING)]
    labels = {choice.name: choice.label for choice in registry.choices(QUESTION_ANSWERING)}
    assert names.index("tiny-bert-qa") < names.index("tiny-chat")
    assert labels["tiny-chat"].endswith("· chat") and "tiny-bert-mlm" not in names
    assert registry.default_choice(QUESTION_ANSWERING) == "tiny-bert-qa"
    # With no extractive model ready offline, a chat model is what answers.
    only_chat = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-chat", only_chat / "tiny-chat")
    offline = ModelRegistry(only_chat)
    assert offline.task_of(offline.default_choice(QUESTION_ANSWERING)) == "text-generation"
    assert offline_note(offline, QUESTION_ANSWERING) is None


def test_questions_asked_together_are_read_in_one_pass_with_the_logits_each_gets_alone(registry):
    """People asking the same model at the same moment share a forward pass (core/threads.py
    groups them): each question's windows get the start and end logits they get alone."""
    pipe = registry.get(QUESTION_ANSWERING, "tiny-bert-qa")
    model, tokenizer = pipe.model, pipe.tokenizer
    long_context = " ".join(corpus()) * 3  # several windows, of another length than the short one
    asked = [(qa._windows(model, tokenizer, "tiny-bert-qa", "the cat likes the red house.", "what does the cat like?"),
              [0]),
             (qa._windows(model, tokenizer, "tiny-bert-qa", long_context, "who reads?"), [0, 1])]
    calls = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        together = qa._logits_together(model, asked)
    finally:
        hook.remove()
    assert len(calls) == 1
    for (starts, ends), one in zip(together, asked):
        (alone_starts, alone_ends), = qa._logits_together(model, [one])
        width = alone_starts.shape[1]  # padding to the longer question's width adds masked positions only
        assert torch.allclose(starts[:, :width], alone_starts, atol=1e-5)
        assert torch.allclose(ends[:, :width], alone_ends, atol=1e-5)
