"""A chat model answers a question with a span of the context, chosen by its own likelihood.

Left to write freely, a small chat model answers in sentences, invents numbers and can run on
(SmolLM2-135M got 1 of 36 questions exactly right that way, and one answer ran for minutes).
Here it only scores: the answer must be words copied from the context, and the model picks the
copy it finds most likely.

1. The prompt shows a few worked examples (a text, a question, a short answer copied from it),
   then the person's context and question, as chat turns (plain text for a model without a
   chat template). One forward pass over it gives the model's first-token distribution.
2. Every word start of the context is a possible first token (with or without its leading
   space); the START_CANDIDATES the model likes best are kept.
3. For each, one batched pass reads the next SPAN_TOKENS context tokens and gives
   log p(span, then end of reply) for every span that starts there and ends at a word end.
4. A span the model would favour whatever was asked (a salient date, a name) is discounted:
   its score under a generic question, times CALIBRATION, is subtracted (contextual
   calibration; bench/qa_chat.py measured it).

The work is bounded (one prompt pass and two small batches), so it can neither run away nor
invent text. UI-free; the torch work runs on the model thread (core/threads.py).
"""

from __future__ import annotations

import copy
import math
import weakref
from dataclasses import dataclass

from core.errors import WorkbenchError
from core.words import ends_word, starts_word

START_CANDIDATES = 10  # word starts the model likes best as an answer's first token
SPAN_TOKENS = 12  # longest answer, in tokens (bench/qa_chat.py: no answer of its set is longer)
CALIBRATION = 0.5  # how much of a span's score under a generic question is taken off
GENERIC_QUESTION = "What does the text mention?"
EXAMPLE_TEXT = ("The Lund Tower stands in the old harbour of Orvik. It was built in 1902 by the mason Karl Berg and "
                "is 60 metres tall. Its four bells ring every hour, and visitors climb its 210 steps to see the sea.")
EXAMPLES = (("Who built the Lund Tower?", "the mason Karl Berg"), ("Where does the tower stand?", "in the old harbour of Orvik"),
            ("How many bells does it have?", "four"), ("When was it built?", "1902"),
            ("What do visitors see from the top?", "the sea"))


@dataclass
class ScoredSpan:
    start: int  # character offsets in the context
    end: int
    probability: float  # its share among the spans considered (softmax of the calibrated scores)


def best_spans(model, tokenizer, context: str, question: str, top_k: int, run=lambda work: work()):
    """Step by step: progress lines for a person, then (last) the top_k spans of `context` the
    model finds the likeliest answers to `question`, best first. `run` runs torch work on the
    model thread; closing the generator between steps stops the work."""
    words = run(lambda: _context_tokens(tokenizer, context))  # a fast tokenizer is used by one thread
    if not words.starts:
        raise WorkbenchError("The context has no words to answer from.")
    yield "Reading the context and the question…"
    asked = run(lambda: _span_log_probs(model, tokenizer, words, context, question, None))
    yield "Weighing the likeliest answers…"
    generic = run(lambda: _span_log_probs(model, tokenizer, words, context, GENERIC_QUESTION, asked.first_tokens))
    scores = {}
    for span, value in sorted(asked.scores.items()):
        # The same words at two places of the context are one answer, with one score (the model
        # scores the words, not where they are): kept where they first occur.
        text = context[span[0]:span[1]]
        if all(context[start:end] != text for start, end in scores):
            scores[span] = value - CALIBRATION * generic.scores.get(span, value)
    top = max(scores.values())
    total = sum(math.exp(value - top) for value in scores.values())
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
    yield [ScoredSpan(start, end, math.exp(value - top) / total) for (start, end), value in ranked]


@dataclass
class _ContextTokens:
    ids: list[int]
    offsets: list[tuple[int, int]]  # in the context
    starts: list[int]  # indices of tokens that begin a word
    ends_at: list[bool]  # after token i, a word ends (an answer may end there)


def _context_tokens(tokenizer, context: str) -> _ContextTokens:
    # With a leading space, every word is tokenized as it is inside a sentence, the first too.
    encoded = tokenizer(" " + context, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = [], []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        start = max(start - 1, 0)
        while start < end - 1 and context[start].isspace():  # offsets may include the space before
            start += 1
        ids.append(token)
        offsets.append((start, max(end - 1, start)))
    # An answer starts and ends on a word, never inside one ("112" of "112.2") and never on
    # punctuation ("Brisk", not also "Brisk.").
    starts = [i for i, (start, end) in enumerate(offsets)
              if end > start and context[start].isalnum() and starts_word(context, start)]
    ends = [end > start and context[end - 1].isalnum() and ends_word(context, end) for start, end in offsets]
    return _ContextTokens(ids, offsets, starts, ends)


@dataclass
class _Scored:
    scores: dict[tuple[int, int], float]  # (start, end) in the context -> log p(span, then end)
    first_tokens: list[tuple[int, int]]  # (context token index, the token id it starts with)


def _span_log_probs(model, tokenizer, words: _ContextTokens, context: str, question: str,
                    first_tokens: list[tuple[int, int]] | None) -> _Scored:
    """log p(span + end of reply | prompt) of the spans that start at the likeliest word starts
    (or at `first_tokens`, to score the same spans under another question)."""
    import torch

    with torch.no_grad():  # here, on the model thread: no_grad holds for the thread that sets it
        prompt = _prompt_ids(model, tokenizer, context, question)
        cache, last_logits = _read_prompt(model, prompt)
        return _scored(model, tokenizer, words, len(prompt), cache, last_logits, first_tokens)


# The key/value cache of the last prompt each model read: the worked examples (and the context,
# when the next question is about it too, or it is the calibration's generic question) need not
# be read again. One prompt per model; dropped with the model.
_LAST_PROMPTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _read_prompt(model, prompt: list[int]):
    """(the cache after reading `prompt`, the logits of its last position), reading only what
    follows the longest prefix it shares with the last prompt this model read."""
    import torch
    from transformers import DynamicCache

    known = _LAST_PROMPTS.get(model)
    shared = 0
    if known is not None:
        for old, new in zip(known[0], prompt[:-1]):  # at least one token is read, for its logits
            if old != new:
                break
            shared += 1
    cache = DynamicCache()
    if shared:
        cache = copy.deepcopy(known[1])
        cache.crop(-(len(known[0]) - shared))  # transformers 5: the number of tokens to drop, negative
    positions = torch.arange(shared, len(prompt), device=model.device).unsqueeze(0)
    out = model(torch.tensor([prompt[shared:]], device=model.device), past_key_values=cache, use_cache=True,
                position_ids=positions)
    _LAST_PROMPTS[model] = (prompt, copy.deepcopy(out.past_key_values))  # the caller extends its own copy
    return out.past_key_values, out.logits[0, -1]


def _scored(model, tokenizer, words: _ContextTokens, prompt_length: int, cache, last_logits,
            first_tokens: list[tuple[int, int]] | None) -> _Scored:
    import torch

    end_ids = _end_ids(model, tokenizer)
    first = torch.log_softmax(last_logits.float(), -1)
    if first_tokens is None:
        options = []
        for index in words.starts:
            token = words.ids[index]
            bare = _without_leading_space(tokenizer, token)
            chosen = max((t for t in (token, bare) if t is not None), key=lambda t: float(first[t]))
            options.append((float(first[chosen]), index, chosen))
        first_tokens = [(index, token) for _, index, token in sorted(options, reverse=True)[:START_CANDIDATES]]
    rows = [[token, *words.ids[index + 1:index + SPAN_TOKENS]] for index, token in first_tokens]
    width = max(map(len, rows))
    pad = end_ids[0]
    batch = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=model.device)
    cache.batch_repeat_interleave(len(rows))
    positions = torch.arange(prompt_length, prompt_length + width, device=model.device).expand(len(rows), -1)
    mask = torch.ones(len(rows), prompt_length + width, dtype=torch.long, device=model.device)
    log_probs = torch.log_softmax(model(batch, past_key_values=cache, attention_mask=mask,
                                        position_ids=positions).logits.float(), -1)
    ending = torch.logsumexp(log_probs[:, :, end_ids], -1)  # the reply ends after this token
    scores = {}
    for row, ((index, token), ids) in enumerate(zip(first_tokens, rows)):
        total = float(first[token])
        for step in range(len(ids)):
            last = index + step
            if words.ends_at[last]:
                span = (words.offsets[index][0], words.offsets[last][1])
                scores[span] = max(scores.get(span, -math.inf), total + float(ending[row, step]))
            if step + 1 < len(ids):
                total += float(log_probs[row, step, ids[step + 1]])
    return _Scored(scores, first_tokens)


def _prompt_ids(model, tokenizer, context: str, question: str) -> list[int]:
    """The prompt: worked examples, then the question about the context; without the examples
    when they do not fit the model's context length; refused when even that does not fit."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    for examples in (EXAMPLES, ()):
        ids = _encode_prompt(tokenizer, examples, context, question)
        if not limit or len(ids) + SPAN_TOKENS <= limit:
            return ids
    raise WorkbenchError(f"The context is too long for this model, which reads {limit} tokens at a time: shorten "
                         f"it, or pick an extractive question-answering model, which reads long contexts in windows.")


def _encode_prompt(tokenizer, examples, context: str, question: str) -> list[int]:
    turns = [(f"{EXAMPLE_TEXT}\n\nQuestion: {asked}", answer) for asked, answer in examples]
    turns.append((f"{context.strip()}\n\nQuestion: {question.strip()}", None))
    if getattr(tokenizer, "chat_template", None):
        messages = []
        for user, assistant in turns:
            messages.append({"role": "user", "content": user})
            if assistant is not None:
                messages.append({"role": "assistant", "content": assistant})
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])
    text = "".join(f"{user}\nAnswer:" + (f" {assistant}\n\n" if assistant is not None else "") for user, assistant in turns)
    return list(tokenizer(text)["input_ids"])


def _end_ids(model, tokenizer) -> list[int]:
    """The tokens that end a reply: the model's end-of-turn tokens, and a line break for plain
    prompts (the examples end their answers with one)."""
    ends = getattr(model.generation_config, "eos_token_id", None)
    ids = list(ends) if isinstance(ends, list) else [ends] if ends is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not getattr(tokenizer, "chat_template", None):
        ids += tokenizer("\n", add_special_tokens=False)["input_ids"][:1]
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise WorkbenchError("This model has no end-of-text token, so it cannot say where an answer ends.")
    return ids


def _without_leading_space(tokenizer, token: int) -> int | None:
    """The same word without its leading space as one token (" Paris" -> "Paris"), if the
    vocabulary has it: an answer's first word follows the start of the reply, not a space."""
    text = tokenizer.convert_ids_to_tokens(token)
    if not isinstance(text, str) or len(text) < 2 or text[0] not in "Ġ▁":
        return None
    bare = tokenizer.convert_tokens_to_ids(text[1:])
    return None if bare is None or bare == tokenizer.unk_token_id else bare
