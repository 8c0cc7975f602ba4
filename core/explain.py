"""Inside the model: attention weights, token probabilities and per-token attributions.

UI-free. Each function takes a model from the registry (the same loaded copy the panels use),
runs its model work on the model thread (core/threads.py) and raises WorkbenchError with a
message a person can act on. Attention maps and token probabilities asked of one model at the
same moment are computed together, in one padded batch whose padding changes no one's numbers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from core.decoding import pad_id
from core.errors import WorkbenchError
from core.inference import end_ids, require_text, run_model, run_model_batched, class_names
from core.limits import (ATTRIBUTION_STEPS, MAX_ATTENTION_TOKENS, MAX_EXPLAIN_CHARS, MAX_PROBABILITY_TOKENS,
                         MAX_PROBABILITY_TOP_K)
from core.models import TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry

MEAN_OVER_HEADS = 0  # `head` value: the mean of every head's weights (heads count from 1)


# The views inside a model read it in float32, whatever the panels compute in: bf16 keeps about
# three significant digits, too few for attention weights, probabilities and gradients shown as
# numbers (integrated gradients sum many small steps).
EXPLAIN_PRECISION = "fp32"

def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """The tokens as the model sees them: word pieces keep their "##", special tokens their
    names, and a byte-level token's leading space is shown as "␣" (it is part of the token)."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    labels = []
    for token_id, piece in zip(ids, pieces):
        if token_id in special or piece.startswith("##"):
            labels.append(piece)
        else:
            labels.append(tokenizer.decode([token_id]).replace(" ", "␣").replace("\n", "↵") or piece)
    return labels


def _encode(tokenizer, text: str, limit: int):
    """The text's token ids with the model's special tokens, cut to `limit` tokens, and whether
    it was cut. Like every tokenizer call here, run on the model thread: a fast tokenizer used by
    two threads at once fails ("Already borrowed"), and the panels' pipelines use it there."""
    whole = len(tokenizer(text)["input_ids"])
    return tokenizer(text, return_tensors="pt", truncation=True, max_length=limit), whole > limit


def _prompt_and_continuation(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """The ids of the prompt and of the continuation, tokenized together (so "Paris" after "is"
    is the " Paris" token the model would write), split where the continuation starts."""
    special = set(tokenizer.all_special_ids)
    if not getattr(tokenizer, "is_fast", False):  # no offsets: each part on its own (rare today)
        return (tokenizer(prompt)["input_ids"],
                [t for t in tokenizer(continuation, add_special_tokens=False)["input_ids"] if t not in special])
    if continuation and not (prompt[-1:].isspace() or continuation[:1].isspace()):
        continuation = " " + continuation  # "is" + "Paris": the words the person means, not "isParis"
    encoded = tokenizer(prompt + continuation, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    first = next((i for i, (start, end) in enumerate(offsets) if end > start and start >= len(prompt)), len(ids))
    return ids[:first], [t for t in ids[first:] if t not in special]


def _padded(rows: list[list[int]], value: int, device, left: bool = False):
    """Rows of different lengths as one tensor: `value` fills each row's end (its start with `left`)."""
    import torch

    width = max(len(row) for row in rows)
    return torch.tensor([[value] * (width - len(row)) + row if left else row + [value] * (width - len(row))
                         for row in rows], device=device)


@contextmanager
def _eager_attention(model):
    """Attention weights come out only of the eager implementation (sdpa and flash compute them
    without keeping them): switched for this call, then put back for the panels' speed. Safe
    because every model call runs on the one model thread."""
    before = getattr(model.config, "_attn_implementation", None)
    switched = before not in (None, "eager")
    if switched:
        try:
            model.set_attn_implementation("eager")
        except Exception as error:
            raise WorkbenchError(f"This model cannot show its attention: it cannot switch to eager attention "
                                 f"({error}).") from error
    try:
        yield
    finally:
        if switched:
            model.set_attn_implementation(before)


# ----- attention ------------------------------------------------------------------------------
@dataclass
class AttentionMap:
    tokens: list[str]
    weights: list[list[float]]  # rows: the token attending (query), columns: the token attended to
    layer: int  # from 1
    head: int  # from 1, or MEAN_OVER_HEADS
    layers: int
    heads: int
    causal: bool  # a decoder: each token attends only to itself and the tokens before it
    truncated: bool


def attention(registry: ModelRegistry, task: str, model_name: str, text: str, layer: int = 1,
              head: int = MEAN_OVER_HEADS) -> AttentionMap:
    """The attention weights of one layer (and one head, or their mean) over the text's tokens."""
    text = require_text(text, "The text", MAX_EXPLAIN_CHARS)
    pipe = registry.get(task, model_name, EXPLAIN_PRECISION)
    model, tokenizer = pipe.model, pipe.tokenizer
    layers = getattr(model.config, "num_hidden_layers", None)
    heads = getattr(model.config, "num_attention_heads", None)
    if not layers or not heads:
        raise WorkbenchError(f"'{model_name}' does not say how many layers and heads it has: its attention "
                             f"cannot be shown.")
    if not 1 <= int(layer) <= layers:
        raise WorkbenchError(f"Layer must be from 1 to {layers} for '{model_name}' (got {layer}).")
    if not 0 <= int(head) <= heads:
        raise WorkbenchError(f"Head must be from 1 to {heads}, or {MEAN_OVER_HEADS} for the mean over heads "
                             f"(got {head}).")

    # Asked at the same moment, the texts of one model share a forward pass (it returns every
    # layer, so their layers and heads may differ).
    tokens, truncated, weights = run_model_batched(
        model_name, ("attention", id(model)), (text, int(layer), int(head)),
        lambda asks: _attention_maps(model, tokenizer, model_name, asks))
    return AttentionMap(tokens=tokens, weights=weights,
                        layer=int(layer), head=int(head), layers=layers, heads=heads,
                        causal=task == TEXT_GENERATION, truncated=truncated)


def _attention_maps(model, tokenizer, model_name: str, asks: list[tuple[str, int, int]]) -> list[tuple]:
    """For each (text, layer, head): its tokens, whether it was cut, and its weights, all from one
    forward pass. Each text is padded at its end, where the padding changes nothing its own tokens
    see: their positions still count from its start, and the mask keeps them from attending to it
    (a decoder's tokens never see later ones anyway)."""
    import torch

    encoded = [_encode(tokenizer, text, MAX_ATTENTION_TOKENS) for text, _, _ in asks]
    batch = {key: _padded([encoding[key][0].tolist() for encoding, _ in encoded],
                          pad_id(tokenizer) if key == "input_ids" else 0, model.device)
             for key in encoded[0][0]}  # input ids, attention mask (0: padding), token types
    with _eager_attention(model), torch.no_grad():
        out = model(**batch, output_attentions=True)
    maps = []
    for row, ((_, layer, head), (encoding, truncated)) in enumerate(zip(asks, encoded)):
        if not out.attentions or len(out.attentions) < layer or out.attentions[layer - 1] is None:
            raise WorkbenchError(f"'{model_name}' returned no attention weights for layer {layer}.")
        ids = encoding["input_ids"][0].tolist()
        chosen = out.attentions[layer - 1][row, :, :len(ids), :len(ids)].float()  # heads x tokens x tokens
        matrix = chosen.mean(dim=0) if head == MEAN_OVER_HEADS else chosen[head - 1]
        maps.append((token_labels(tokenizer, ids), truncated, matrix.tolist()))
    return maps


# ----- token probabilities --------------------------------------------------------------------
@dataclass
class TokenChoice:
    token: str  # as token_labels shows it
    text: str  # the text it adds
    probability: float  # given everything before it
    alternatives: list[tuple[str, float]]  # the top-k tokens the model gave most probability at that step


def token_probabilities(registry: ModelRegistry, model_name: str, prompt: str, continuation: str = "",
                        max_new_tokens: int = 20, top_k: int = 5) -> list[TokenChoice]:
    """Each token of a continuation of `prompt` with its probability and the top-k alternatives at
    that step. With no `continuation` the model writes one greedily (`max_new_tokens`). The
    probabilities are the model's own (softmax of its logits, no temperature or top-k filter)."""
    prompt = require_text(prompt, "The prompt", MAX_EXPLAIN_CHARS)
    if not 1 <= int(max_new_tokens) <= MAX_PROBABILITY_TOKENS:
        raise WorkbenchError(f"Tokens to write must be from 1 to {MAX_PROBABILITY_TOKENS} (got {max_new_tokens}).")
    if not 1 <= int(top_k) <= MAX_PROBABILITY_TOP_K:
        raise WorkbenchError(f"Alternatives must be from 1 to {MAX_PROBABILITY_TOP_K} (got {top_k}).")
    pipe = registry.get(TEXT_GENERATION, model_name, EXPLAIN_PRECISION)
    model, tokenizer = pipe.model, pipe.tokenizer
    given = continuation if (continuation or "").strip() else None
    # Asked at the same moment, the prompts of one model are written and scored together.
    choices = run_model_batched(model_name, ("token-probabilities", id(model)),
                                 (prompt, given, int(max_new_tokens), int(top_k)),
                                 lambda asks: _token_choices(model, tokenizer, asks))
    if not choices:
        raise WorkbenchError(f"'{model_name}' wrote nothing after this prompt (it ended at once): write the "
                             f"start of a text for it to continue, or give the continuation to score.")
    return choices


def _token_choices(model, tokenizer, asks: list[tuple[str, str | None, int, int]]) -> list[list[TokenChoice]]:
    """For each (prompt, continuation or None, tokens to write, top-k): its TokenChoices. The
    continuations not given are written in one greedy generation; then one forward pass over every
    prompt + continuation gives them all their probabilities."""
    import torch

    prompts, continuations = [], []
    for prompt, continuation, _, _ in asks:
        prompt_part, continuation_part = _prompt_and_continuation(tokenizer, prompt, continuation or "")
        if not prompt_part:
            raise WorkbenchError("The prompt has no tokens for this model: type some words.")
        prompts.append(prompt_part[-MAX_ATTENTION_TOKENS:])
        continuations.append(None if continuation is None else continuation_part[:MAX_PROBABILITY_TOKENS])
    to_write = [i for i, continuation in enumerate(continuations) if continuation is None]
    if to_write:
        written = _greedy_continuations(model, tokenizer, [prompts[i] for i in to_write],
                                        [asks[i][2] for i in to_write])
        for i, ids in zip(to_write, written):
            continuations[i] = ids
    # Padded at their ends: a decoder's tokens never see later ones, so the padding changes nothing.
    rows = [prompt + continuation for prompt, continuation in zip(prompts, continuations)]
    with torch.no_grad():
        logits = model(input_ids=_padded(rows, pad_id(tokenizer), model.device),
                       attention_mask=_padded([[1] * len(row) for row in rows], 0, model.device)).logits.float()
    choices = []
    for row, (prompt, continuation, (_, _, _, top_k)) in enumerate(zip(prompts, continuations, asks)):
        # The logits at position i give the probabilities of token i + 1.
        probabilities = torch.softmax(logits[row, len(prompt) - 1:len(prompt) + len(continuation) - 1], dim=-1)
        choices.append(_choices(tokenizer, continuation, probabilities, top_k))
    return choices


def _greedy_continuations(model, tokenizer, prompts: list[list[int]], lengths: list[int]) -> list[list[int]]:
    """What the model writes after each prompt, always taking its most likely token: at most
    `lengths[i]` tokens, up to and with the end-of-text token. One generation writes them all: the
    prompts are padded at their starts (so that every row's next token comes at the same place;
    generate counts positions from each row's first real token), and a greedy text's first tokens
    do not depend on how far it goes, so the longest run serves the shorter ones too."""
    import torch

    pad = pad_id(tokenizer)
    ids = _padded(prompts, pad, model.device, left=True)
    mask = _padded([[1] * len(prompt) for prompt in prompts], 0, model.device, left=True)
    with torch.no_grad():
        # No penalty from the model's generation config: the token written is the most likely one,
        # as shown; and a penalty on tokens already in a row would also count its padding.
        out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max(lengths), pad_token_id=pad,
                             temperature=None, top_k=None, top_p=None, repetition_penalty=1.0, no_repeat_ngram_size=0)
    ends = end_ids(model)
    written = []
    for row, length in zip(out[:, ids.shape[1]:].tolist(), lengths):
        row = row[:length]
        end = next((i for i, token in enumerate(row) if token in ends), None)
        written.append(row if end is None else row[:end + 1])  # after its end a row holds padding
    return written


def _choices(tokenizer, new_ids: list[int], probabilities, top_k: int) -> list[TokenChoice]:
    """Each new token with its probability (row i of `probabilities`) and the top-k at that step."""
    import torch

    choices = []
    for position, (token_id, label) in enumerate(zip(new_ids, token_labels(tokenizer, new_ids))):
        top = torch.topk(probabilities[position], top_k)
        alternatives = list(zip(token_labels(tokenizer, top.indices.tolist()), top.values.tolist()))
        choices.append(TokenChoice(token=label, text=tokenizer.decode([token_id]),
                                   probability=float(probabilities[position, token_id]), alternatives=alternatives))
    return choices


# ----- attributions ---------------------------------------------------------------------------
@dataclass
class Attribution:
    tokens: list[str]
    scores: list[float]  # per token, scaled so the largest magnitude is 1; > 0 pushes towards the class
    label: str  # the class explained
    probability: float  # the model's probability of that class for the text
    predicted: str  # the class the model predicts
    delta: float  # integrated gradients' convergence error (small: the scores add up to the change)
    truncated: bool


def attributions(registry: ModelRegistry, model_name: str, text: str, label: str | None = None) -> Attribution:
    """Why the classifier gives `label` (default: its prediction): captum's integrated gradients
    on the word embeddings, from a baseline where every word is the pad token (special tokens
    kept) to the text, for the class's probability."""
    import torch
    from captum.attr import LayerIntegratedGradients

    text = require_text(text, "The text", MAX_EXPLAIN_CHARS)
    pipe = registry.get(TEXT_CLASSIFICATION, model_name, EXPLAIN_PRECISION)
    model, tokenizer = pipe.model, pipe.tokenizer
    classes = class_names(registry, model_name, EXPLAIN_PRECISION)
    if label and label not in classes:
        raise WorkbenchError(f"'{model_name}' has no class '{label}': its classes are {', '.join(classes)}.")
    filler = next((t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id) if t is not None),
                  0)

    def class_probabilities(input_ids, attention_mask):
        return torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)

    def run():
        encoded, truncated = _encode(tokenizer, text, MAX_ATTENTION_TOKENS)
        ids = encoded["input_ids"].to(model.device)
        mask = encoded["attention_mask"].to(model.device)
        special = torch.tensor([[token in tokenizer.all_special_ids for token in ids[0].tolist()]], device=ids.device)
        baseline = torch.where(special, ids, torch.full_like(ids, filler))
        with torch.no_grad():
            probabilities = class_probabilities(ids, mask)[0]
        target = classes.index(label) if label else int(probabilities.argmax())
        explainer = LayerIntegratedGradients(class_probabilities, model.get_input_embeddings())
        with torch.enable_grad():
            scores, delta = explainer.attribute(ids, baselines=baseline, additional_forward_args=(mask,),
                                                target=target, n_steps=ATTRIBUTION_STEPS,
                                                internal_batch_size=ATTRIBUTION_STEPS,
                                                return_convergence_delta=True)
        tokens = token_labels(tokenizer, ids[0].tolist())
        per_token = scores.sum(dim=-1)[0].detach().float()
        peak = float(per_token.abs().max()) or 1.0
        return tokens, truncated, probabilities.tolist(), target, (per_token / peak).tolist(), float(delta.abs().max())

    tokens, truncated, probabilities, target, scores, delta = run_model(model_name, run)
    predicted = max(range(len(probabilities)), key=probabilities.__getitem__)
    return Attribution(tokens=tokens, scores=scores,
                       label=classes[target], probability=float(probabilities[target]),
                       predicted=classes[predicted], delta=delta, truncated=truncated)
