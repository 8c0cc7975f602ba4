"""Question answering over a context: extractive models pick a span; a chat model picks the
span of the context it finds likeliest (core/chat_spans.py).

transformers 5 has no question-answering pipeline, so the span selection is written here from
the model's start and end logits and the tokenizer's offsets (as the old pipeline did): a long
context is read in overlapping windows, every span of up to MAX_ANSWER_TOKENS context tokens is
scored p(start) x p(end), and the [CLS] position's score is the "no answer" of SQuAD2-style
models. UI-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from core import chat_spans
from core.errors import WorkbenchError
from core.words import whole_words
from core.inference import require_text, run_model, run_model_batched
from core.limits import (MAX_ANSWER_TOKENS, MAX_ANSWER_TOP_K, MAX_CONTEXT_CHARS, MAX_PROMPT_CHARS,
                         MAX_QUESTION_CHARS, QA_STRIDE_TOKENS, QA_WINDOW_TOKENS)
from core.models import QUESTION_ANSWERING, TEXT_GENERATION, ModelRegistry

EXTRACTIVE, GENERATIVE = "extractive", "chat model"
MIN_CONTEXT_TOKENS = 32  # a question must leave the context at least this much of each window
WINDOWS_PER_PASS = 8  # windows read in one forward pass


@dataclass
class AnswerSpan:
    text: str
    start: int  # character offsets in the context
    end: int
    score: float  # extractive: p(start) x p(end); chat model: its share among the spans it scored


@dataclass
class Answer:
    answer: str  # "" when the model says the context holds no answer
    way: str  # EXTRACTIVE or GENERATIVE
    spans: list[AnswerSpan] = field(default_factory=list)  # best first
    no_answer_score: float | None = None  # extractive: the [CLS] score (SQuAD2-style "no answer")
    windows: int = 1  # how many overlapping windows the context was read in


def answer(registry: ModelRegistry, model_name: str, context: str, question: str, top_k: int = 3,
           precision: str | None = None) -> Answer:
    """Answer `question` from `context` with an extractive model, or with a chat model (a text
    generation model) that picks a span of the context. `precision`: the registry's."""
    *_, result = answer_steps(registry, model_name, context, question, top_k, precision)
    return result


def answer_steps(registry: ModelRegistry, model_name: str, context: str, question: str, top_k: int = 3,
                 precision: str | None = None) -> Iterator[str | Answer]:
    """`answer` step by step: progress lines a person reads, then (last) the Answer. Closing
    the iterator between steps stops the work (the panel's Stop button)."""
    context = require_text(context, "The context", MAX_CONTEXT_CHARS)
    question = require_text(question, "The question", MAX_QUESTION_CHARS)
    if not 1 <= int(top_k) <= MAX_ANSWER_TOP_K:
        raise WorkbenchError(f"Answers to list must be from 1 to {MAX_ANSWER_TOP_K} (got {top_k}).")
    if registry.task_of(model_name) == TEXT_GENERATION:
        yield from _chat_span_answer(registry, model_name, context, question, int(top_k), precision)
        return
    try:
        loaded = registry.get(QUESTION_ANSWERING, model_name, precision)
    except WorkbenchError:
        # A Hub model not downloaded before: its kind is known once loading fetched its config.
        if registry.task_of(model_name) == TEXT_GENERATION:
            yield from _chat_span_answer(registry, model_name, context, question, int(top_k), precision)
            return
        raise
    yield from _extract(loaded, model_name, context, question, int(top_k))


def _extract(loaded, model_name: str, context: str, question: str, top_k: int) -> Iterator[str | Answer]:
    model, tokenizer = loaded.model, loaded.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise WorkbenchError(f"'{model_name}' has a slow tokenizer without character offsets: answers cannot be "
                             f"placed in the context.")
    # Tokenized on the model thread: a fast tokenizer fails ("Already borrowed") when two threads
    # use it at once, and the panels' pipelines use it there.
    encoded = run_model(model_name, lambda: _windows(model, tokenizer, model_name, context, question))
    context_index = 1 if tokenizer.padding_side == "right" else 0
    candidates: dict[tuple[int, int], float] = {}
    no_answer = None
    count = len(encoded["input_ids"])

    def read_together(asked: list[tuple]) -> list[list]:
        # On the model thread (torch ops elsewhere slow it, core/threads.py): the windows of every
        # question to this model asked at the same moment are read in one forward pass.
        logits = _logits_together(model, [(enc, windows) for enc, windows, _ in asked])
        return [[_window_spans(enc, window, starts[row], ends[row], context_index, tokenizer.cls_token_id, k)
                 for row, window in enumerate(windows)]
                for (enc, windows, k), (starts, ends) in zip(asked, logits)]

    for first_window in range(0, count, WINDOWS_PER_PASS):  # bounded memory; other requests run between
        chosen = list(range(first_window, min(count, first_window + WINDOWS_PER_PASS)))
        yield (f"Reading the context: windows {chosen[0] + 1}–{chosen[-1] + 1} of {count}…" if count > 1 else
               "Reading the context…")
        for spans, null_score in run_model_batched(model_name, ("qa", id(model)), (encoded, chosen, top_k),
                                                    read_together):
            for span, value in spans:
                candidates[span] = max(candidates.get(span, 0.0), value)
            if null_score is not None:
                no_answer = null_score if no_answer is None else min(no_answer, null_score)
    # Whole words only: a span ending inside a word ("design" of "designed", a sub-word token's
    # end) is widened to the word, and spans that become the same keep their best score.
    widened: dict[tuple[int, int], float] = {}
    for (start, end), value in candidates.items():
        span = whole_words(context, start, end)
        widened[span] = max(widened.get(span, 0.0), value)
    ranked = sorted(widened.items(), key=lambda item: item[1], reverse=True)[:top_k]
    spans = [AnswerSpan(context[s:e], s, e, score) for (s, e), score in ranked if context[s:e].strip()]
    says_none = not spans or (no_answer is not None and no_answer > spans[0].score)
    yield Answer(answer="" if says_none else spans[0].text, way=EXTRACTIVE, spans=spans,
                 no_answer_score=no_answer, windows=count)


def _windows(model, tokenizer, model_name: str, context: str, question: str):
    """The question with each overlapping window of the context, as the model reads them
    (question first for right-padding tokenizers, as in SQuAD training)."""
    # The window fits the model's positions (a tokenizer's model_max_length may be "unlimited").
    limits = [QA_WINDOW_TOKENS, getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    window = min(limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000)
    asked = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    room = window - asked - tokenizer.num_special_tokens_to_add(pair=True)
    if room < MIN_CONTEXT_TOKENS:
        raise WorkbenchError(f"The question is {asked} tokens long, and '{model_name}' reads {window} tokens at a "
                             f"time, question and context together: shorten the question.")
    question_first = tokenizer.padding_side == "right"
    try:
        return tokenizer(question if question_first else context, context if question_first else question,
                         truncation="only_second" if question_first else "only_first", max_length=window,
                         stride=min(QA_STRIDE_TOKENS, room // 2), return_overflowing_tokens=True,
                         return_offsets_mapping=True)
    except Exception as error:
        raise WorkbenchError(f"'{model_name}' cannot read this question with this context: {error}") from error


def _logits_together(model, asked: list[tuple]) -> list[tuple]:
    """For each (encoded, windows) asked, the start and end logits of those windows: all windows
    of all of them in one forward pass, padded on the right (masked) to one length."""
    import torch

    rows = [(encoded, w) for encoded, windows in asked for w in windows]
    width = max(len(encoded["input_ids"][w]) for encoded, w in rows)
    batch = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if all(key in encoded for encoded, _ in rows):
            batch[key] = torch.tensor([encoded[key][w] + [0] * (width - len(encoded[key][w])) for encoded, w in rows],
                                      device=model.device)
    with torch.no_grad():
        out = model(**batch)
    starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()
    answers, first = [], 0
    for _, windows in asked:
        answers.append((starts[first:first + len(windows)], ends[first:first + len(windows)]))
        first += len(windows)
    return answers


def _window_spans(encoded, window: int, start_logits, end_logits, context_index: int, cls_id, top_k: int):
    """One window's top-k (character span, p(start) x p(end)) inside the context, at most
    MAX_ANSWER_TOKENS long, and its "no answer" score: the [CLS] position's (None without one)."""
    import torch

    length = len(encoded["input_ids"][window])
    start_logits, end_logits = start_logits[:length], end_logits[:length]
    in_context = torch.tensor([s == context_index for s in encoded.sequence_ids(window)])
    ids = encoded["input_ids"][window]
    null = ids.index(cls_id) if cls_id is not None and cls_id in ids else None
    allowed = in_context.clone()
    if null is not None:
        allowed[null] = True
    p_start = torch.softmax(start_logits.masked_fill(~allowed, -1e9), dim=-1)
    p_end = torch.softmax(end_logits.masked_fill(~allowed, -1e9), dim=-1)
    positions = torch.arange(length)
    band = (positions[None, :] >= positions[:, None]) & (positions[None, :] - positions[:, None] < MAX_ANSWER_TOKENS)
    scores = torch.outer(p_start, p_end) * band * in_context[:, None] * in_context[None, :]
    best = torch.topk(scores.flatten(), min(top_k, scores.numel()))
    offsets = encoded["offset_mapping"][window]
    spans = [((offsets[flat // length][0], offsets[flat % length][1]), value)
             for value, flat in zip(best.values.tolist(), best.indices.tolist()) if value > 0]
    return spans, None if null is None else float(p_start[null] * p_end[null])


def _chat_span_answer(registry: ModelRegistry, model_name: str, context: str, question: str, top_k: int,
                      precision: str | None = None) -> Iterator[str | Answer]:
    """A chat model's answer: the span of the context it finds likeliest (core/chat_spans.py),
    with the next best as candidates; the same each time (no sampling)."""
    if len(context) > MAX_PROMPT_CHARS:
        raise WorkbenchError(f"A chat model answers from at most {MAX_PROMPT_CHARS:,} characters of context (this one "
                             f"has {len(context):,}): shorten it, or pick an extractive question-answering model, "
                             f"which reads long contexts in windows.")
    loaded = registry.get(TEXT_GENERATION, model_name, precision)
    if not getattr(loaded.tokenizer, "is_fast", False):
        raise WorkbenchError(f"'{model_name}' has a slow tokenizer without character offsets: answers cannot be "
                             f"placed in the context.")
    found = []
    for found in chat_spans.best_spans(loaded.model, loaded.tokenizer, context, question, top_k,
                                       run=lambda work: run_model(model_name, work)):
        if isinstance(found, str):
            yield found
    spans = [AnswerSpan(context[span.start:span.end], span.start, span.end, span.probability) for span in found]
    yield Answer(answer=spans[0].text, way=GENERATIVE, spans=spans)
