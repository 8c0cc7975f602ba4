"""Continuous batching: every generation for one model shares one running batch.

Why: on a shared server (a class behind one link) a batch of 8 rows costs little more per step
than a single row on a CPU, where each step is bound by reading the weights, so 8 people served
together each finish about as soon as one alone; served one after another, the eighth waits for
seven whole generations (bench/concurrency.py measures both).

How: a `DecodingBatch` per (model, precision) lives on the model thread (core/threads.py), which
steps every batch in turn. A request is prefilled when it arrives (its prompts read once, its
first token chosen at once) and its rows join the batch at the next step; a row leaves the moment
it ends, reaches its length or is stopped. Rows are left-padded to the batch's length: the padding
is masked out of attention and positions count only a row's own tokens, so each row computes what
it would alone. Each row samples with its own settings and its own seeded generator, so a seed
gives the same text alone or with others (in float32; in bf16 the batch's shape changes rounding).

transformers' own ContinuousBatchingManager was measured against this (bench/concurrency.py):
on CPU its paged attention made 8 greedy generations take 4x longer than serving them one by one,
and it shares one sampling setting across requests.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from core.limits import MAX_DECODING_ROWS, QUEUE_MAX_SIZE

STEP_TIME_SMOOTHING = 0.2  # weight of the newest step in the running average used for wait estimates
WAIT_NOTE_SECONDS = 1.0  # how often a queued request hears its place and wait again


@dataclass
class Waiting:
    """Sent to a request while the batch is full: how many queued requests are ahead of it and
    about how long until it starts (from the batch's measured step time). `compiling`: it waits
    instead for the model's decoding step to compile (core/compiled_step.py)."""

    ahead: int
    seconds: float
    compiling: bool = False


@dataclass
class DecodingRequest:
    """One person's generation: `prompts` (token ids) each written `sequences` times.

    The engine puts on `updates`: a `Waiting` while queued, then for each step a list with the
    text each row gained (prompt-major: prompt 0's sequences first), `None` at the end, or the
    exception that ended it. Setting `stop` ends its rows at the next step."""

    prompts: list[list[int]]
    sequences: int
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    seeds: list[int]  # one per row
    stop: threading.Event = field(default_factory=threading.Event)
    updates: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.sequences


class _Row:
    """A row of the running batch: its request, its place there, what it has written."""

    def __init__(self, request: DecodingRequest, index: int, prompt: list[int], generator) -> None:
        import torch

        self.request, self.index, self.generator = request, index, generator
        self.history = torch.tensor(prompt)  # prompt and written tokens, for the repetition penalty
        self.length = len(prompt)  # the row's own tokens in the cache (its next position)
        self.written: list[int] = []
        self.shown = 0  # characters of the decoded text handed over already
        self.done = False


def pad_id(tokenizer) -> int:
    """The id that fills a short row of a batch (the attention mask hides it, so any id would do;
    the model's own pad token where it has one)."""
    return next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)


class DecodingBatch:
    """The running batch of one model: admitted requests, their rows and their shared cache."""

    def __init__(self, model, tokenizer, end_ids: set[int], max_rows: int = MAX_DECODING_ROWS,
                 max_waiting: int = QUEUE_MAX_SIZE) -> None:
        self.model, self.tokenizer, self.end_ids, self.max_rows = model, tokenizer, end_ids, max_rows
        self.max_waiting = max_waiting  # requests that may wait for a place; more are refused at once
        self.pad_id = pad_id(tokenizer)
        # A LoRA model (peft) forwards everything to its base model, whose forward says what it takes.
        taken = inspect.signature(getattr(model, "get_base_model", lambda: model)().forward).parameters
        self.takes_positions = "position_ids" in taken
        self.prefill_options = {"logits_to_keep": 1} if "logits_to_keep" in taken else {}
        self.waiting: deque[DecodingRequest] = deque()
        self.rows: list[_Row] = []
        self.cache = None
        self.mask = None  # (rows, cache length): 1 for a row's own tokens, 0 for its left padding
        self.step_seconds: float | None = None  # running average of one decoding step
        self.joinable = True  # False once the cache has layers rows cannot be merged into
        self.told_waiting = 0.0  # when the queued requests last heard their place
        self.static = None  # the compiled step (core/compiled_step.py) whose cache holds the one row

    # ----- what the model thread calls ---------------------------------------------------------
    def add(self, request: DecodingRequest) -> None:
        from core.errors import WorkbenchError

        if len(self.waiting) >= self.max_waiting and self.rows:
            raise WorkbenchError(f"The queue is full ({self.max_waiting} waiting for this model): try again in a "
                                 "moment.")
        self.waiting.append(request)
        self._admit()
        self._tell_waiting()

    @property
    def idle(self) -> bool:
        return not self.rows and not self.waiting

    def step(self) -> None:
        """Drop stopped rows, admit waiting requests, then write one token for every row."""
        try:
            self._drop([row for row in self.rows if row.request.stop.is_set()])
            self._admit()
            if self.waiting and time.monotonic() - self.told_waiting > WAIT_NOTE_SECONDS:
                self._tell_waiting()
            if self.rows:
                self._decode()
        except BaseException as error:  # noqa: BLE001 - every request of the batch gets it
            self.end(error)

    def end(self, last: BaseException | None) -> None:
        """End every request, running or waiting, with `last` (the error that ended the batch, or
        None for a plain end) and empty the batch."""
        for request in [*_requests_of(self.rows), *self.waiting]:
            request.updates.put(last)
        self.rows, self.waiting, self.cache, self.mask = [], deque(), None, None
        self._release_static()

    # ----- admission ----------------------------------------------------------------------------
    def _admit(self) -> None:
        for request in [request for request in self.waiting if request.stop.is_set()]:
            self.waiting.remove(request)  # stopped while queued: it leaves the line at once
            request.updates.put(None)
        while self.waiting:
            request = self.waiting[0]
            full = len(self.rows) + request.rows > self.max_rows
            if self.rows and (full or not self.joinable):
                return
            self.waiting.popleft()
            try:
                self._join(request)
            except Exception as error:  # noqa: BLE001 - this request's input failed: it alone gets the error
                request.updates.put(error)

    def _tell_waiting(self) -> None:
        self.told_waiting = time.monotonic()
        for ahead, request in enumerate(self.waiting):
            request.updates.put(Waiting(ahead=ahead, seconds=self._wait_estimate(ahead)))

    def _wait_estimate(self, ahead: int) -> float:
        """Seconds until the request with `ahead` queued before it can start: rows free up as
        running rows reach their length (stopped early, they free sooner), and each request
        ahead holds the rows it takes for its own length."""
        import heapq

        if not self.rows:
            return 0.0
        # When each place of the batch frees, in steps from now (free places: now).
        frees = [row.request.max_new_tokens - len(row.written) for row in self.rows]
        if not self.joinable:  # nothing joins this batch: the line waits for all of it
            frees = [max(frees)] * len(frees)
        frees += [0] * max(0, self.max_rows - len(frees))
        heapq.heapify(frees)
        start = 0
        for request in list(self.waiting)[:ahead + 1]:
            taken = [heapq.heappop(frees) for _ in range(min(request.rows, len(frees)))]
            start = max([start, *taken])
            for _ in taken:
                heapq.heappush(frees, start + request.max_new_tokens)
        return start * (self.step_seconds or 0.1)

    def _join(self, request: DecodingRequest) -> None:
        """Read the request's prompts (each once, repeated for its sequences), choose each row's
        first token, and merge its cache into the batch's."""
        import torch

        if not self.rows and request.rows == 1:
            from core.compiled_step import compiled_step_for

            step = compiled_step_for(self.model)  # the first ask starts compiling it, in the background
            if step is not None and step.fits(len(request.prompts[0]), request.max_new_tokens):
                return self._join_static(step, request)
        longest = max(len(ids) for ids in request.prompts)
        input_ids = torch.tensor([[self.pad_id] * (longest - len(ids)) + ids for ids in request.prompts])
        mask = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids in request.prompts])
        kwargs = {}
        if self.takes_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0).to(self.model.device)
        with torch.no_grad():
            out = self.model(input_ids=input_ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                             use_cache=True, **self.prefill_options, **kwargs)
        cache, logits = out.past_key_values, out.logits[:, -1, :].float()
        if request.sequences > 1:
            cache.batch_repeat_interleave(request.sequences)
            logits = logits.repeat_interleave(request.sequences, 0)
            mask = mask.repeat_interleave(request.sequences, 0)
        rows = [_Row(request, index, request.prompts[index // request.sequences],
                     torch.Generator().manual_seed(request.seeds[index]))
                for index in range(request.rows)]
        first = self._choose(rows, logits)  # all that can fail on this request's input, before it joins
        self._merge(cache, mask.to(self.model.device), rows)
        self._emit(rows, first)

    def _join_static(self, step, request: DecodingRequest) -> None:
        """A request alone at an empty batch, decoded by the model's compiled step."""
        import torch

        prompt = request.prompts[0]
        with torch.no_grad():
            logits = step.prefill(prompt).float()
        rows = [_Row(request, 0, prompt, torch.Generator().manual_seed(request.seeds[0]))]
        first = self._choose(rows, logits)
        step.in_use = True
        self.static, self.rows, self.joinable = step, rows, True
        self.mask = torch.ones((1, len(prompt)), dtype=torch.long, device=self.model.device)
        self._emit(rows, first)

    def _release_static(self) -> None:
        if self.static is not None:
            self.static.in_use = False
            self.static = None

    def _merge(self, cache, mask, rows: list[_Row]) -> None:
        import torch
        from transformers.cache_utils import DynamicLayer

        if self.static is not None:  # someone joins the compiled row: its cache becomes an ordinary one
            self.cache = self.static.as_dynamic_cache(self.mask.shape[1])
            self._release_static()

        layers = getattr(cache, "layers", None)
        self.joinable = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, rows
            return
        length = max(self.mask.shape[1], mask.shape[1])

        def left_padded(tensor, to: int):
            pad = to - tensor.shape[-2]
            if not pad:
                return tensor
            zeros = tensor.new_zeros((*tensor.shape[:-2], pad, tensor.shape[-1]))
            return torch.cat([zeros, tensor], dim=-2)

        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([left_padded(mine.keys, length), left_padded(theirs.keys, length)])
            mine.values = torch.cat([left_padded(mine.values, length), left_padded(theirs.values, length)])
        pad = lambda m: torch.cat([m.new_zeros((m.shape[0], length - m.shape[1])), m], dim=1)  # noqa: E731
        self.mask = torch.cat([pad(self.mask), pad(mask)])
        self.rows = self.rows + rows

    # ----- decoding -----------------------------------------------------------------------------
    def _decode(self) -> None:
        import torch

        started = time.perf_counter()
        device = self.model.device
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        with torch.no_grad():
            if self.static is not None:
                logits = self.static.step(self.rows[0].written[-1], self.rows[0].length)
            else:
                last = torch.tensor([[row.written[-1]] for row in self.rows], device=device)
                past = self.mask.shape[1] - 1
                kwargs = {}
                if self.takes_positions:
                    kwargs["position_ids"] = torch.tensor([[row.length] for row in self.rows], device=device)
                logits = self.model(input_ids=last, attention_mask=self.mask, past_key_values=self.cache,
                                    use_cache=True, cache_position=torch.tensor([past], device=device),
                                    **kwargs).logits[:, -1, :]
        for row in self.rows:
            row.length += 1
        self._emit(self.rows, self._choose(self.rows, logits.float()))
        seconds = time.perf_counter() - started
        self.step_seconds = seconds if self.step_seconds is None else (
            (1 - STEP_TIME_SMOOTHING) * self.step_seconds + STEP_TIME_SMOOTHING * seconds)

    def _choose(self, rows: list[_Row], logits) -> list[int]:
        """Each row's next token under its request's settings: transformers' repetition penalty,
        temperature, top-k and top-p, then a draw from the row's own generator (or the most
        likely token at temperature 0). Rows of one request share settings and go together."""
        import torch

        chosen = [0] * len(rows)
        groups: dict[int, list[int]] = {}
        for position, row in enumerate(rows):
            groups.setdefault(id(row.request), []).append(position)
        for positions in groups.values():
            request = rows[positions[0]].request
            scores = logits[positions]
            if request.repetition_penalty != 1.0:
                scores = torch.stack([_penalised(scores[i], rows[p].history, request.repetition_penalty)
                                      for i, p in enumerate(positions)])
            if request.temperature > 0:
                scores = _warped(scores, request)
                noise = torch.stack([torch.rand(scores.shape[-1], generator=rows[p].generator) for p in positions])
                noise = noise.clamp_min(torch.finfo(noise.dtype).tiny).to(scores.device)
                scores = scores + -torch.log(-torch.log(noise))  # Gumbel-max: a draw from the softmax
            for i, token in zip(positions, scores.argmax(-1).tolist()):
                chosen[i] = token
        return chosen

    def _emit(self, rows: list[_Row], tokens: list[int]) -> None:
        """Hand each request the text its rows gained, end the rows that are done, and drop them."""
        import torch

        gained: dict[int, list[str]] = {}
        for row, token in zip(rows, tokens):
            chunks = gained.setdefault(id(row.request), [""] * row.request.rows)
            if token in self.end_ids:
                row.done = True
                continue
            row.written.append(token)
            row.history = torch.cat([row.history, torch.tensor([token])])
            text = self.tokenizer.decode(row.written, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # a character split across tokens waits for the rest
                chunks[row.index], row.shown = text[row.shown:], len(text)
            if len(row.written) >= row.request.max_new_tokens:
                row.done = True
        for request in _requests_of(rows):
            if any(gained[id(request)]):
                request.updates.put(gained[id(request)])
        self._drop([row for row in self.rows if row.done])

    def _drop(self, leaving: list[_Row]) -> None:
        """Take rows out of the batch (and their cache); a request whose rows are all gone ends."""
        if not leaving:
            return
        gone = {id(row) for row in leaving}
        keep = [i for i, row in enumerate(self.rows) if id(row) not in gone]
        before = _requests_of(self.rows)
        self.rows = [self.rows[i] for i in keep]
        still = {id(row.request) for row in self.rows}
        try:
            self._cut(keep)
        finally:  # told last: once a request hears its end, the model is done with it
            for request in before:
                if id(request) not in still:
                    request.updates.put(None)

    def _cut(self, keep: list[int]) -> None:
        """Keep only the rows `keep` of the cache and mask, and cut columns no row uses."""
        import torch

        if not self.rows:
            self.cache = self.mask = None
            self.joinable = True
            self._release_static()
            return
        if len(keep) < self.mask.shape[0]:
            index = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
        # Columns that are padding in every row left (a long prompt gone) are cut off.
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else 0
        if start and self.joinable:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]
            self.mask = self.mask[:, start:]


def _requests_of(rows: list[_Row]) -> list[DecodingRequest]:
    """The requests the rows belong to, each once, in order (a request's rows are together)."""
    return list({id(row.request): row.request for row in rows}.values())


def _penalised(scores, history, penalty: float):
    """transformers' repetition penalty for one row (its own tokens only, never padding)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(penalty)(history.to(scores.device).unsqueeze(0), scores.unsqueeze(0))[0]


def _warped(scores, request: DecodingRequest):
    """transformers' temperature, top-k and top-p warpers; top-p looks at the top-k candidates
    only (the same tokens survive; sorting the whole vocabulary per row per step costs a tenth
    of a step on SmolLM2's 49,152 tokens)."""
    import torch
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(request.temperature)(None, scores)
    if request.top_k and request.top_p < 1:
        values, indices = scores.topk(min(request.top_k, scores.shape[-1]), dim=-1)
        kept = TopPLogitsWarper(request.top_p)(None, values)
        return torch.full_like(scores, -float("inf")).scatter(-1, indices, kept)
    if request.top_k:
        return TopKLogitsWarper(request.top_k)(None, scores)
    if request.top_p < 1:
        return TopPLogitsWarper(request.top_p)(None, scores)
    return scores


class Batches:
    """The running batches, one per model; used only on the model thread. `step_all` steps each
    in turn, so two models take fair turns instead of the first one running to its end."""

    def __init__(self) -> None:
        self._batches: dict[object, DecodingBatch] = {}

    def join(self, key, make: Callable[[], DecodingBatch], request: DecodingRequest) -> None:
        try:
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = make()
            batch.add(request)
        except Exception as error:  # noqa: BLE001 - the asker waits on its updates: it must hear
            request.updates.put(error)

    @property
    def busy(self) -> bool:
        return bool(self._batches)

    def rows(self) -> int:
        return sum(len(batch.rows) for batch in self._batches.values())

    def end_all(self) -> None:
        """End every request (the process is exiting): each asker hears the end."""
        for batch in self._batches.values():
            batch.end(None)
        self._batches.clear()

    def step_all(self, between: Callable[[], None]) -> None:
        for key, batch in list(self._batches.items()):
            batch.step()
            if batch.idle:
                del self._batches[key]
            between()  # short work (a classification) runs between two models' steps too


class PerPersonLimit:
    """How many generations one person (a browser session, an API client) may run at once, so
    that one person cannot fill a batch the whole class shares. Owner "" is not limited (the
    command line, tests of core)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, owner: str):
        from core.errors import WorkbenchError

        if not owner:
            yield
            return
        with self._lock:
            if self._running.get(owner, 0) >= self.limit:
                what = "a generation" if self.limit == 1 else f"{self.limit} generations"
                raise WorkbenchError(f"You have {what} running already (the limit per person on this "
                                     "server): wait for it to end or press Stop, then try again.")
            self._running[owner] = self._running.get(owner, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[owner] -= 1
                if not self._running[owner]:
                    del self._running[owner]
