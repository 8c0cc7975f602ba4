"""Question answering over a context: extractive models pick a span, chat models answer from a
grounded prompt.

transformers 5 has no question-answering pipeline, so the span selection is written here from
the model's start and end logits and the tokenizer's offsets (as the old pipeline did): a long
context is read in overlapping windows, every span of up to MAX_ANSWER_TOKENS context tokens is
scored p(start) x p(end), and the [CLS] position's score is the "no answer" of SQuAD2-style
models. UI-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import WorkbenchError
from core.inference import GenerationSettings, _require_text, _run_model, generate_stream, has_chat_template
from core.limits import (MAX_ANSWER_TOKENS, MAX_ANSWER_TOP_K, MAX_CONTEXT_CHARS, MAX_PROMPT_CHARS,
                         MAX_QUESTION_CHARS, QA_STRIDE_TOKENS, QA_WINDOW_TOKENS)
from core.models import QUESTION_ANSWERING, TEXT_GENERATION, ModelRegistry

EXTRACTIVE, GENERATIVE = "extractive", "chat model"
GROUNDED_INSTRUCTION = ("Answer the question using only the context below, in a few words. If the context does "
                        "not contain the answer, reply exactly: The context does not say.")
NOT_IN_CONTEXT = "The context does not say."
GROUNDED_NEW_TOKENS = 48
MIN_CONTEXT_TOKENS = 32  # a question must leave the context at least this much of each window
WINDOWS_PER_PASS = 8  # windows read in one forward pass


@dataclass
class AnswerSpan:
    text: str
    start: int  # character offsets in the context
    end: int
    score: float | None  # p(start) x p(end); None for a chat model's answer found in the context


@dataclass
class Answer:
    answer: str  # "" when the model says the context holds no answer
    way: str  # EXTRACTIVE or GENERATIVE
    spans: list[AnswerSpan] = field(default_factory=list)  # best first (extractive; the chat answer if found)
    no_answer_score: float | None = None  # extractive: the [CLS] score (SQuAD2-style "no answer")
    windows: int = 1  # how many overlapping windows the context was read in


def answer(registry: ModelRegistry, model_name: str, context: str, question: str, top_k: int = 3,
           precision: str | None = None) -> Answer:
    """Answer `question` from `context` with an extractive model, or with a chat model (a text
    generation model) through a prompt that holds the context. `precision`: the registry's."""
    context = _require_text(context, "The context", MAX_CONTEXT_CHARS)
    question = _require_text(question, "The question", MAX_QUESTION_CHARS)
    if not 1 <= int(top_k) <= MAX_ANSWER_TOP_K:
        raise WorkbenchError(f"Answers to list must be from 1 to {MAX_ANSWER_TOP_K} (got {top_k}).")
    if registry.task_of(model_name) == TEXT_GENERATION:
        return _grounded_answer(registry, model_name, context, question, precision)
    try:
        return _extract(registry, model_name, context, question, int(top_k), precision)
    except WorkbenchError:
        # A Hub model not downloaded before: its kind is known once loading fetched its config.
        if registry.task_of(model_name) == TEXT_GENERATION:
            return _grounded_answer(registry, model_name, context, question, precision)
        raise


def _extract(registry: ModelRegistry, model_name: str, context: str, question: str, top_k: int,
             precision: str | None = None) -> Answer:
    loaded = registry.get(QUESTION_ANSWERING, model_name, precision)
    model, tokenizer = loaded.model, loaded.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise WorkbenchError(f"'{model_name}' has a slow tokenizer without character offsets: answers cannot be "
                             f"placed in the context.")
    # Tokenized on the model thread: a fast tokenizer fails ("Already borrowed") when two threads
    # use it at once, and the panels' pipelines use it there.
    encoded = _run_model(model_name, lambda: _windows(model, tokenizer, model_name, context, question))
    context_index = 1 if tokenizer.padding_side == "right" else 0
    candidates: dict[tuple[int, int], float] = {}
    no_answer = None
    count = len(encoded["input_ids"])

    def read(windows: list[int]):  # scored on the model thread too: torch ops elsewhere slow it (core/threads.py)
        start_logits, end_logits = _logits(model, encoded, windows)
        return [_window_spans(encoded, window, start_logits[row], end_logits[row], context_index,
                              tokenizer.cls_token_id, top_k) for row, window in enumerate(windows)]

    for first_window in range(0, count, WINDOWS_PER_PASS):  # bounded memory; other requests run between
        chosen = list(range(first_window, min(count, first_window + WINDOWS_PER_PASS)))
        for spans, null_score in _run_model(model_name, lambda: read(chosen)):
            for span, value in spans:
                candidates[span] = max(candidates.get(span, 0.0), value)
            if null_score is not None:
                no_answer = null_score if no_answer is None else min(no_answer, null_score)
    ranked = sorted(candidates.items(), key=lambda item: item[1], reverse=True)[:top_k]
    spans = [AnswerSpan(context[s:e], s, e, score) for (s, e), score in ranked if context[s:e].strip()]
    says_none = not spans or (no_answer is not None and no_answer > spans[0].score)
    return Answer(answer="" if says_none else spans[0].text, way=EXTRACTIVE, spans=spans,
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


def _logits(model, encoded, windows: list[int]):
    """Start and end logits of some windows, padded on the right (masked) to one length."""
    import torch

    width = max(len(encoded["input_ids"][w]) for w in windows)
    batch = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in encoded:
            rows = [encoded[key][w] + [0] * (width - len(encoded[key][w])) for w in windows]
            batch[key] = torch.tensor(rows, device=model.device)
    with torch.no_grad():
        out = model(**batch)
    return out.start_logits.float().cpu(), out.end_logits.float().cpu()


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


def _grounded_answer(registry: ModelRegistry, model_name: str, context: str, question: str,
                     precision: str | None = None) -> Answer:
    """A chat model's answer from a prompt that holds the context (greedy, so it is repeatable)."""
    prompt = f"{GROUNDED_INSTRUCTION}\n\nContext:\n{context.strip()}\n\nQuestion: {question.strip()}\nAnswer:"
    if len(prompt) > MAX_PROMPT_CHARS:
        room = MAX_PROMPT_CHARS - len(prompt) + len(context)
        raise WorkbenchError(f"A chat model answers from at most about {room:,} characters of context (this one "
                             f"has {len(context):,}): shorten it, or pick an extractive question-answering model, "
                             f"which reads long contexts in windows.")
    chat = has_chat_template(registry, model_name, precision)
    settings = GenerationSettings(max_new_tokens=GROUNDED_NEW_TOKENS, temperature=0, repetition_penalty=1.0,
                                  seed=0, use_chat_template=chat)
    texts = [""]
    for texts in generate_stream(registry, model_name, prompt, settings, precision=precision):
        pass
    reply = texts[0] if chat else texts[0][len(prompt):]
    reply = reply.strip().split("\n")[0].strip()
    if not reply or reply.rstrip(".").lower() == NOT_IN_CONTEXT.rstrip(".").lower():
        return Answer(answer="", way=GENERATIVE)
    found = locate_in_context(reply, context, question)
    spans = [AnswerSpan(context[found[0]:found[1]], found[0], found[1], None)] if found else []
    return Answer(answer=reply, way=GENERATIVE, spans=spans)


def locate_in_context(reply: str, context: str, question: str) -> tuple[int, int] | None:
    """Where a chat model's answer comes from in the context: the run of words it shares with
    the context that holds the most telling words (numbers, or words of 4 letters or more) the
    question does not have (a reply repeats the question:
    "The tower was built in 1889" -> "1889"); None when it shares no such word."""
    import difflib
    import re

    def words(text):
        return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"\w+", text)]

    asked = {word for word, _, _ in words(question)}
    said, source = words(reply), words(context)
    matcher = difflib.SequenceMatcher(None, [w for w, _, _ in said], [w for w, _, _ in source], autojunk=False)
    best, best_key = None, (0, 0)
    for block in matcher.get_matching_blocks():
        run = source[block.b:block.b + block.size]
        # trim short function words at the ends ("is 330 metres tall" -> "330 metres tall")
        while run and len(run[0][0]) < 3 and not run[0][0].isdigit():
            run = run[1:]
        while run and len(run[-1][0]) < 3 and not run[-1][0].isdigit():
            run = run[:-1]
        new = sum(word not in asked and (len(word) >= 4 or word.isdigit()) for word, _, _ in run)
        if (new, len(run)) > best_key and new:
            best, best_key = (run[0][1], run[-1][2]), (new, len(run))
    return best
