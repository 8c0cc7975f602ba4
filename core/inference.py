"""Inference on top of the registry's pipelines: streaming generation, sentiment, fill-mask.

Each function takes plain values, validates them (WorkbenchError with a message for a person)
and returns plain data. Models come from the registry, so they load once and stay cached.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.errors import WorkbenchError, first_line, require_number
from core.limits import (
    CLASSIFY_BATCH_SIZE,
    DEFAULT_NEW_TOKENS,
    MAX_BATCH_ROWS,
    MAX_FILL_MASK_TOP_K,
    MAX_MASKS,
    MAX_NEW_TOKENS,
    MAX_NUM_SEQUENCES,
    MAX_PROMPT_CHARS,
    MAX_REPETITION_PENALTY,
    MAX_TEMPERATURE,
    MAX_TEXT_CHARS,
    MAX_TOP_K,
)
from core.models import FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry
from core.threads import MODEL_THREAD


@dataclass
class GenerationSettings:
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 0.8  # 0 means greedy decoding
    top_k: int = 50  # 0 disables top-k filtering
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int | None = 0  # None: a different result each time
    num_sequences: int = 1
    use_chat_template: bool = False

    def __post_init__(self) -> None:
        require_number(self.max_new_tokens, 1, MAX_NEW_TOKENS, "Max new tokens", integer=True)
        require_number(self.temperature, 0.0, MAX_TEMPERATURE, "Temperature")
        require_number(self.top_k, 0, MAX_TOP_K, "Top-k", integer=True)
        require_number(self.top_p, 0.01, 1, "Top-p")
        require_number(self.repetition_penalty, 1.0, MAX_REPETITION_PENALTY, "Repetition penalty")
        require_number(self.num_sequences, 1, MAX_NUM_SEQUENCES, "Number of sequences", integer=True)
        if self.seed is not None:
            require_number(self.seed, 0, 2**32 - 1, "Seed", integer=True)
        self.max_new_tokens, self.top_k, self.num_sequences = (
            int(self.max_new_tokens), int(self.top_k), int(self.num_sequences))
        self.seed = None if self.seed is None else int(self.seed)


def _require_text(text: str | None, what: str, limit: int) -> str:
    if text is None or not str(text).strip():
        raise WorkbenchError(f"{what} is empty: type some text first.")
    text = str(text)
    if len(text) > limit:
        raise WorkbenchError(f"{what} is too long: {len(text):,} characters (limit {limit:,}).")
    return text


def _run_model(model_name: str, call):
    """Run one model call on the model thread (core/threads.py says why); a failure inside the
    model (a broken checkpoint, an input it cannot take) becomes a message naming the model."""
    try:
        return MODEL_THREAD.run_model_work(call)
    except WorkbenchError:
        raise
    except Exception as error:
        raise WorkbenchError(f"'{model_name}' failed on this input: {type(error).__name__}: "
                             f"{first_line(error)[:300]}") from error


# ----- text generation ------------------------------------------------------------------------
def has_chat_template(registry: ModelRegistry, model_name: str) -> bool:
    return bool(getattr(registry.get(TEXT_GENERATION, model_name).tokenizer, "chat_template", None))


def generate_stream(
    registry: ModelRegistry,
    model_name: str,
    prompt: str,
    settings: GenerationSettings,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[list[str]]:
    """Yield the texts of all sequences so far, growing as tokens arrive.

    Sequences are generated one after another (sequence i uses seed + i), so each streams.
    Plain mode yields prompt + continuation; chat mode yields the reply only. Closing the
    iterator, or `should_stop()` turning true, stops generation within one token.
    """
    prompt = _require_text(prompt, "The prompt", MAX_PROMPT_CHARS)
    pipe = registry.get(TEXT_GENERATION, model_name)
    tokenizer, model = pipe.tokenizer, pipe.model
    if settings.use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise WorkbenchError(f"'{model_name}' has no chat template: turn off chat mode.")
    inputs, max_new_tokens = _prepare_inputs(tokenizer, model, prompt, settings)
    prefix = generation_prefix(prompt, settings)
    texts: list[str] = []
    for index in range(settings.num_sequences):
        texts.append(prefix)
        seed = None if settings.seed is None else settings.seed + index
        wrote = False
        for chunk in _stream_one(model, tokenizer, inputs, settings, max_new_tokens, seed, should_stop):
            texts[index] += chunk
            wrote = True
            yield list(texts)
        if not wrote:  # the model ended at once: the caller still gets every sequence
            yield list(texts)
        if should_stop():
            return


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


def _prepare_inputs(tokenizer, model, prompt: str, settings: GenerationSettings):
    if settings.use_chat_template:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True, return_tensors="pt", return_dict=True,
        )
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    # Keep prompt + new tokens inside the model's context: drop the oldest prompt tokens.
    context = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    max_new_tokens = settings.max_new_tokens
    if context:
        max_new_tokens = min(max_new_tokens, context - 1)
        keep = context - max_new_tokens
        inputs = {key: value[:, -keep:] for key, value in inputs.items()}
    return inputs, max_new_tokens


def _token_streamer(base):
    """TextIteratorStreamer that hands over text after every token, not only at word ends: the
    first words appear as soon as the model makes them (bench/infer.py measures it)."""

    class TokenStreamer(base):
        def put(self, value):
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                return
            printable, self.print_len = text[self.print_len:], len(text)
            if printable:
                self.on_finalized_text(printable)

    return TokenStreamer


def _stream_one(model, tokenizer, inputs, settings, max_new_tokens, seed, should_stop):
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, set_seed

    stop = threading.Event()

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            MODEL_THREAD.between_tokens()  # a classification asked meanwhile runs now, not after us
            return bool(stop.is_set() or should_stop())

    streamer = _token_streamer(TextIteratorStreamer)(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = settings.temperature > 0
    kwargs = dict(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        repetition_penalty=settings.repetition_penalty,
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([_Stop()]),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if sampling:
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    else:  # greedy: unset the sampling defaults a model's generation_config may carry
        kwargs.update(temperature=None, top_k=None, top_p=None)
    failure: list[BaseException] = []

    def run() -> None:
        if stop.is_set():  # the consumer went away while an earlier generation ran
            return
        try:
            # Sampling draws from torch's global random generator: generations run one at a time
            # on the model thread, so the seed set here is the one this generation uses.
            if seed is not None:
                set_seed(seed)
            model.generate(**kwargs)
        except BaseException as error:  # surfaced to the caller below
            failure.append(error)
            streamer.end()

    finished = MODEL_THREAD.start_generation(run)
    try:
        for chunk in streamer:
            if chunk:
                yield chunk
    finally:
        stop.set()  # the consumer went away (Stop button, closed page): end generation now
    finished.result()
    if failure:
        raise WorkbenchError(f"Generation failed: {failure[0]}") from failure[0]


# ----- sentiment / text classification ----------------------------------------------------------
def classify(registry: ModelRegistry, model_name: str, text: str) -> dict[str, float]:
    """Every class of the model with its probability, highest first."""
    text = _require_text(text, "The text", MAX_TEXT_CHARS)
    pipe = registry.get(TEXT_CLASSIFICATION, model_name)
    scores = _run_model(model_name, lambda: pipe(text, top_k=None, truncation=True))
    if scores and isinstance(scores[0], list):  # some versions nest per input
        scores = scores[0]
    ranked = sorted(scores, key=lambda item: item["score"], reverse=True)
    return {item["label"]: float(item["score"]) for item in ranked}


def class_names(registry: ModelRegistry, model_name: str) -> list[str]:
    """The classes a classifier predicts, in its own order (config.id2label)."""
    config = registry.get(TEXT_CLASSIFICATION, model_name).model.config
    return [config.id2label[i] for i in sorted(config.id2label)]


@dataclass
class ScoredText:
    text: str
    label: str
    score: float


def classify_batch(registry: ModelRegistry, model_name: str, texts: list[str]) -> list[ScoredText]:
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
    pipe = registry.get(TEXT_CLASSIFICATION, model_name)
    # Empty rows are kept in place (so the table lines up with the file) but not scored.
    to_score = [i for i, text in enumerate(cleaned) if text.strip()]
    results = _run_model(model_name, lambda: pipe([cleaned[i] for i in to_score], batch_size=CLASSIFY_BATCH_SIZE,
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


def fill_mask(registry: ModelRegistry, model_name: str, text: str, top_k: int = 5) -> list[list[MaskPrediction]]:
    """For each mask in `text` (written [MASK] or <mask>), the top-k predictions."""
    text = _require_text(text, "The text", MAX_TEXT_CHARS)
    require_number(top_k, 1, MAX_FILL_MASK_TOP_K, "Top-k", integer=True)
    masks = len(_MASK_SPELLINGS.findall(text))
    if masks == 0:
        raise WorkbenchError("The text has no mask: write [MASK] (or <mask>) where a word is missing.")
    if masks > MAX_MASKS:
        raise WorkbenchError(f"Too many masks: {masks} (limit {MAX_MASKS}).")
    pipe = registry.get(FILL_MASK, model_name)
    mask_token = pipe.tokenizer.mask_token
    model_text = _MASK_SPELLINGS.sub(lambda _: mask_token, text)
    input_ids = pipe.tokenizer(model_text, truncation=True)["input_ids"]
    if input_ids.count(pipe.tokenizer.mask_token_id) < masks:
        raise WorkbenchError("The text is too long for this model: a mask falls after its last token.")
    raw = _run_model(model_name, lambda: pipe(model_text, top_k=int(top_k), tokenizer_kwargs={"truncation": True}))
    per_mask = [raw] if masks == 1 else raw
    return [
        [MaskPrediction(index, item["token_str"].strip() or repr(item["token_str"]), float(item["score"]), item["sequence"])
         for item in predictions]
        for index, predictions in enumerate(per_mask, start=1)
    ]
