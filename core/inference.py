"""Inference on top of the registry's pipelines: streaming generation, sentiment, fill-mask.

Each function takes plain values, validates them (WorkbenchError with a message for a person)
and returns plain data. Models come from the registry, so they load once and stay cached.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.errors import WorkbenchError, first_line, require_number
from core.limits import (
    CLASSIFY_BATCH_SIZE,
    DEFAULT_NEW_TOKENS,
    MAX_BATCH_ROWS,
    MAX_DECODING_ROWS,
    MAX_FILL_MASK_TOP_K,
    MAX_MASKS,
    MAX_NEW_TOKENS,
    MAX_NUM_SEQUENCES,
    MAX_PROMPT_CHARS,
    QUEUE_MAX_SIZE,
    MAX_REPETITION_PENALTY,
    MAX_TEMPERATURE,
    MAX_TEXT_CHARS,
    MAX_TOP_K,
)
from core.settings import check_ranges, setting
from core.models import FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry
from core.decoding import DecodingBatch, DecodingRequest, Waiting
from core.compiled_step import compiling_now
from core.threads import MODEL_THREAD

STOP_POLL_SECONDS = 0.1  # how often a waiting request checks should_stop() while nothing arrives


@dataclass
class GenerationSettings:
    # Each field's default, label and range, declared once (core/settings.py): the checks below,
    # the generation panel's sliders and the API's defaults come from here.
    max_new_tokens: int = setting(DEFAULT_NEW_TOKENS, "Max new tokens", 1, MAX_NEW_TOKENS, step=1, whole=True)
    temperature: float = setting(0.8, "Temperature", 0.0, MAX_TEMPERATURE, step=0.05,
                                 info="0 = always the most likely token")
    top_k: int = setting(50, "Top-k", 0, MAX_TOP_K, step=1, whole=True, info="0 = off")
    top_p: float = setting(0.95, "Top-p", 0.01, 1, step=0.01)
    repetition_penalty: float = setting(1.1, "Repetition penalty", 1.0, MAX_REPETITION_PENALTY, step=0.05)
    seed: int | None = setting(0, "Seed", 0, 2**32 - 1, whole=True)  # None: a different result each time
    num_sequences: int = setting(1, "Number of sequences", 1, MAX_NUM_SEQUENCES, step=1, whole=True)
    use_chat_template: bool = False

    def __post_init__(self) -> None:
        check_ranges(self, named_by_label=True)
        # A JSON 1 arrives as an int; transformers' warpers refuse an int temperature or penalty.
        self.temperature, self.top_p, self.repetition_penalty = (
            float(self.temperature), float(self.top_p), float(self.repetition_penalty))


def random_seed() -> int:
    """A fresh seed for a request that asked for none, to be shown to the person (with it the
    same text can be made again)."""
    import random

    return random.SystemRandom().randrange(2**31)


def require_text(text: str | None, what: str, limit: int) -> str:
    if text is None or not str(text).strip():
        raise WorkbenchError(f"{what} is empty: type some text first.")
    text = str(text)
    if len(text) > limit:
        raise WorkbenchError(f"{what} is too long: {len(text):,} characters (limit {limit:,}).")
    return text


def run_model(model_name: str, call):
    """Run one model call on the model thread (core/threads.py says why)."""
    return _failure_named(model_name, lambda: MODEL_THREAD.run_model_work(call))


def run_model_batched(model_name: str, key, item, run_many):
    """Run one input on the model thread, in one call with the other inputs of `key` asked at the
    same moment (`run_batchable` in core/threads.py)."""
    return _failure_named(model_name, lambda: MODEL_THREAD.run_batchable(key, item, run_many))


def _failure_named(model_name: str, run):
    """A failure inside the model (a broken checkpoint, an input it cannot take) becomes a
    message naming the model."""
    try:
        return run()
    except WorkbenchError:
        raise
    except Exception as error:
        raise WorkbenchError(f"'{model_name}' failed on this input: {type(error).__name__}: "
                             f"{first_line(error)[:300]}") from error


# ----- text generation ------------------------------------------------------------------------
def has_chat_template(registry: ModelRegistry, model_name: str, precision: str | None = None) -> bool:
    return bool(getattr(registry.get(TEXT_GENERATION, model_name, precision).tokenizer, "chat_template", None))


def generate_stream(
    registry: ModelRegistry,
    model_name: str,
    prompt: str,
    settings: GenerationSettings,
    should_stop: Callable[[], bool] = lambda: False,
    precision: str | None = None,
) -> Iterator[list[str]]:
    """Yield the texts of all sequences of one prompt so far, growing as tokens arrive (see
    generate_streams)."""
    for texts in generate_streams(registry, model_name, [prompt], settings, should_stop, precision):
        yield texts[0]


def generate_streams(
    registry: ModelRegistry,
    model_name: str,
    prompts: list[str],
    settings: GenerationSettings,
    should_stop: Callable[[], bool] = lambda: False,
    precision: str | None = None,
) -> Iterator[list[list[str]]]:
    """Yield, for each prompt, the texts of its sequences so far, growing as tokens arrive
    (`generation_updates` without its waiting notes)."""
    for update in generation_updates(registry, model_name, prompts, settings, should_stop, precision):
        if not isinstance(update, Waiting):
            yield update


def generation_updates(
    registry: ModelRegistry,
    model_name: str,
    prompts: list[str],
    settings: GenerationSettings,
    should_stop: Callable[[], bool] = lambda: False,
    precision: str | None = None,
    batch_rows: int = MAX_DECODING_ROWS,
    max_waiting: int = QUEUE_MAX_SIZE,
) -> Iterator[list[list[str]] | Waiting]:
    """Yield, for each prompt, the texts of its sequences so far, growing as tokens arrive; and
    a `Waiting` (place and expected wait) while the model's batch is full.

    Every sequence of every prompt is a row of the model's running batch, which other people's
    generations join and leave (core/decoding.py); each prompt is read once however many
    sequences it gets. Sequence i of every prompt samples with seed + i, the same draws whether
    it is generated alone or with others (the same text in float32; in bf16 the batch's shape
    changes rounding). Plain mode yields prompt + continuation; chat mode yields the reply only.
    Closing the iterator, or `should_stop()` turning true, ends this request's rows within a
    step, and no one else's. `precision`: the registry's ("auto", "fp32", "bf16"; None: the
    registry's own). `batch_rows`: the most rows the model's batch takes, `max_waiting` the requests
    that may wait for a place (both set by whoever starts the batch).
    """
    prompts = [require_text(prompt, "The prompt" if index == 0 else "The second prompt", MAX_PROMPT_CHARS)
               for index, prompt in enumerate(prompts)]
    pipe = registry.get(TEXT_GENERATION, model_name, precision)
    tokenizer, model = pipe.tokenizer, pipe.model
    if settings.use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise WorkbenchError(f"'{model_name}' has no chat template: turn off chat mode.")
    if compiling_now(model):  # the model thread is busy compiling: the person hears why nothing comes
        yield Waiting(ahead=0, seconds=0, compiling=True)
    # On the model thread: there the batch decodes with this tokenizer, and a fast tokenizer
    # used by two threads at once can fail ("Already borrowed").
    encoded = run_model(model_name, lambda: [_prompt_ids(tokenizer, model, prompt, settings) for prompt in prompts])
    n = settings.num_sequences
    base = settings.seed if settings.seed is not None else random_seed()
    request = DecodingRequest(
        prompts=[ids for ids, _ in encoded], sequences=n, max_new_tokens=min(limit for _, limit in encoded),
        temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        seeds=[(base + row % n) % 2**32 for row in range(len(prompts) * n)])
    texts = [[generation_prefix(prompt, settings)] * n for prompt in prompts]
    wrote = False
    for update in _decoded(model, tokenizer, request, should_stop, batch_rows, max_waiting):
        if isinstance(update, Waiting):
            yield update
            continue
        for row, chunk in enumerate(update):
            texts[row // n][row % n] += chunk
        wrote = True
        yield [list(sequences) for sequences in texts]
    if not wrote:  # the model ended at once: the caller still gets every sequence
        yield [list(sequences) for sequences in texts]


def _decoded(model, tokenizer, request: DecodingRequest, should_stop: Callable[[], bool], batch_rows: int,
             max_waiting: int):
    """Hand the request to the model's running batch and pass on what it sends back."""
    make = lambda: DecodingBatch(model, tokenizer, end_ids(model), batch_rows, max_waiting)  # noqa: E731
    MODEL_THREAD.join_batch(id(model), make, request)
    ended = False
    try:
        while True:
            try:
                update = request.updates.get(timeout=STOP_POLL_SECONDS)
            except queue.Empty:
                if should_stop():
                    request.stop.set()
                continue
            if update is None or isinstance(update, BaseException):
                ended = True
            if update is None:
                return
            if isinstance(update, WorkbenchError):
                raise update
            if isinstance(update, BaseException):
                raise WorkbenchError(f"Generation failed: {first_line(update)[:300]}") from update
            yield update
            if should_stop():
                request.stop.set()
    finally:
        request.stop.set()  # the consumer went away (Stop button, closed page): its rows leave the batch
        # ...at the batch's next step: wait for it, so that the model is done with this request
        # when its asker returns (a process that exits mid-step aborts in torch's C++ code).
        while not ended:
            update = request.updates.get()
            ended = update is None or isinstance(update, BaseException)


def generation_prefix(prompt: str, settings: GenerationSettings) -> str:
    """What each yielded text starts with before the model writes: the prompt in plain mode,
    nothing in chat mode (the reply only)."""
    return "" if settings.use_chat_template else prompt


def nothing_written_advice(model_name: str, settings: GenerationSettings) -> str:
    """What to tell a person whose generation ended before the model wrote a single token."""
    if settings.use_chat_template:
        return (f"'{model_name}' ended its reply at once, without writing anything. Rephrase the "
                "message, or raise the temperature.")
    return (f"'{model_name}' ended at once, without writing anything: in plain mode it continues "
            "the prompt as text, and it read this prompt as finished. Turn on Chat mode to ask a "
            "chat model a question, or write the start of the text you want it to continue "
            "(for example 'The capital of France is').")


def _prompt_ids(tokenizer, model, prompt: str, settings: GenerationSettings) -> tuple[list[int], int]:
    """The prompt's token ids (through the chat template in chat mode) and how many new tokens
    fit: prompt + new tokens stay inside the model's context, the oldest prompt tokens dropped."""
    if settings.use_chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    max_new_tokens = settings.max_new_tokens
    if context:
        max_new_tokens = min(max_new_tokens, context - 1)
        ids = ids[-(context - max_new_tokens):]
    return list(ids), max_new_tokens


def end_ids(model) -> set[int]:
    """The tokens generate ends a row on: after one, what it adds to that row is padding."""
    ends = getattr(model.generation_config, "eos_token_id", None)
    return set(ends if isinstance(ends, list) else [ends] if ends is not None else [])


# ----- sentiment / text classification ----------------------------------------------------------
def classify(registry: ModelRegistry, model_name: str, text: str, precision: str | None = None) -> dict[str, float]:
    """Every class of the model with its probability, highest first (`precision`: the registry's)."""
    text = require_text(text, "The text", MAX_TEXT_CHARS)
    pipe = registry.get(TEXT_CLASSIFICATION, model_name, precision)
    scores = run_model_batched(model_name, ("classify", id(pipe)), text,
                                lambda texts: pipe(texts, top_k=None, truncation=True, batch_size=len(texts)))
    if scores and isinstance(scores[0], list):  # some versions nest per input
        scores = scores[0]
    ranked = sorted(scores, key=lambda item: item["score"], reverse=True)
    return {item["label"]: float(item["score"]) for item in ranked}


def class_names(registry: ModelRegistry, model_name: str, precision: str | None = None) -> list[str]:
    """The classes a classifier predicts, in its own order (config.id2label)."""
    config = registry.get(TEXT_CLASSIFICATION, model_name, precision).model.config
    return [config.id2label[i] for i in sorted(config.id2label)]


@dataclass
class ScoredText:
    text: str
    label: str
    score: float


def classify_batch(registry: ModelRegistry, model_name: str, texts: list[str],
                   precision: str | None = None) -> list[ScoredText]:
    """Top label and its probability for each text, scored in batches of CLASSIFY_BATCH_SIZE."""
    if not texts:
        raise WorkbenchError("There are no texts to score.")
    if len(texts) > MAX_BATCH_ROWS:
        raise WorkbenchError(
            f"Too many rows: {len(texts):,} (limit {MAX_BATCH_ROWS:,}). Split the file and score it in parts.")
    cleaned = [str(text) if text is not None else "" for text in texts]
    too_long = [i for i, text in enumerate(cleaned) if len(text) > MAX_TEXT_CHARS]
    if too_long:
        raise WorkbenchError(
            f"Row {too_long[0] + 1} is too long ({len(cleaned[too_long[0]]):,} characters, "
            f"limit {MAX_TEXT_CHARS:,}).")
    pipe = registry.get(TEXT_CLASSIFICATION, model_name, precision)
    # Empty rows are kept in place (so the table lines up with the file) but not scored.
    to_score = [i for i, text in enumerate(cleaned) if text.strip()]
    results = run_model(model_name, lambda: pipe([cleaned[i] for i in to_score], batch_size=CLASSIFY_BATCH_SIZE,
                                                  truncation=True))
    scored = [ScoredText(text, "", float("nan")) for text in cleaned]
    for i, result in zip(to_score, results):
        if isinstance(result, list):
            result = result[0]
        scored[i].label, scored[i].score = result["label"], float(result["score"])
    return scored


# ----- fill-mask ----------------------------------------------------------------------------------
_MASK_SPELLINGS = re.compile(r"\[MASK\]|<mask>", re.IGNORECASE)


@dataclass
class MaskPrediction:
    mask_index: int  # 1-based position of the mask in the text
    token: str
    score: float
    sequence: str  # the text with this mask filled by `token`


def fill_mask(registry: ModelRegistry, model_name: str, text: str, top_k: int = 5,
              precision: str | None = None) -> list[list[MaskPrediction]]:
    """For each mask in `text` (written [MASK] or <mask>), the top-k predictions (`precision`:
    the registry's)."""
    text = require_text(text, "The text", MAX_TEXT_CHARS)
    require_number(top_k, 1, MAX_FILL_MASK_TOP_K, "Top-k", integer=True)
    masks = len(_MASK_SPELLINGS.findall(text))
    if masks == 0:
        raise WorkbenchError("The text has no mask: write [MASK] (or <mask>) where a word is missing.")
    if masks > MAX_MASKS:
        raise WorkbenchError(f"Too many masks: {masks} (limit {MAX_MASKS}).")
    pipe = registry.get(FILL_MASK, model_name, precision)
    mask_token = pipe.tokenizer.mask_token
    model_text = _MASK_SPELLINGS.sub(lambda _: mask_token, text)
    # On the model thread: the pipeline uses this tokenizer there, and a fast tokenizer used by two
    # threads at once can fail ("Already borrowed").
    input_ids = run_model(model_name, lambda: pipe.tokenizer(model_text, truncation=True)["input_ids"])
    if input_ids.count(pipe.tokenizer.mask_token_id) < masks:
        raise WorkbenchError("The text is too long for this model: a mask falls after its last token.")
    # A model that has learnt little (a short fine-tune, MiniLM's untrained masked-LM head) can
    # rank its own markers ([MASK], [CLS], <pad>) among the words: they are not words a person
    # could write there, so enough more are asked for to leave top_k words once they are dropped.
    markers = set(pipe.tokenizer.all_special_ids)
    asked = min(int(top_k) + len(markers), pipe.model.config.vocab_size)
    raw = run_model_batched(model_name, ("fill-mask", id(pipe), asked), model_text,
                             lambda texts: _as_list(pipe(texts, top_k=asked, batch_size=len(texts),
                                                         tokenizer_kwargs={"truncation": True}), len(texts)))
    per_mask = [raw] if masks == 1 else raw

    def words(predictions: list[dict]) -> list[dict]:
        return [item for item in predictions if item["token"] not in markers][:int(top_k)]

    return [
        [MaskPrediction(index, _shown_token(item["token_str"]), float(item["score"]),
                        filled_sentence(text, index, item["token_str"]))
         for item in words(predictions)]
        for index, predictions in enumerate(per_mask, start=1)
    ]


def _as_list(raw, inputs: int) -> list:
    """The fill-mask pipeline's answer for a list of inputs, one entry per input: given a list of
    one, it answers as for a single text."""
    return [raw] if inputs == 1 else raw


def _shown_token(token: str) -> str:
    return token.strip() or repr(token)


def filled_sentence(text: str, mask_index: int, token: str) -> str:
    """The person's text with its `mask_index`-th mask (1-based) replaced by `token`, and nothing
    else changed: the pipeline's own `sequence` is decoded from token ids, which lowercases an
    uncased model's text and re-spaces punctuation ("the capital of france is paris .")."""
    word = token.strip()
    continues_word = word.startswith("##")  # a WordPiece piece joins the word before it
    word = word.removeprefix("##") if continues_word else word or token
    masks = list(_MASK_SPELLINGS.finditer(text))
    mask = masks[mask_index - 1]
    before = text[:mask.start()].rstrip() if continues_word else text[:mask.start()]
    return before + word + text[mask.end():]


def untrained_head_note(registry: ModelRegistry, model_name: str) -> str | None:
    """A warning for a masked or causal LM fine-tuned here whose output head started untrained
    (all-MiniLM-L6-v2 as a masked LM): its scores look confident and mean little. None for
    other models."""
    import json

    from core.packaged import packaged_models

    kind, folder = registry.resolve(model_name)
    if kind != "local":
        return None
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not fine-tuned here
    base = metrics.get("base_model")
    packaged = packaged_models().get(base)
    saved_before_the_flag = packaged is not None and "masked-lm" in packaged.untrained_head_for
    if not (metrics.get("untrained_head") or saved_before_the_flag):
        return None
    perplexity = (metrics.get("after") or {}).get("perplexity")
    measured = f" (its validation perplexity after training: {perplexity:,.0f})" if perplexity else ""
    return (f"'{model_name}' was fine-tuned from {base}, which had no trained head for this: the head started from "
            f"random weights{measured}. These scores can look confident and still mean little; such a model "
            f"often gives the same top words for every sentence. Use it to try the workflow, not for real "
            f"predictions.")
