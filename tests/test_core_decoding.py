"""Continuous batching (core/decoding.py): people's generations join and leave one running batch,
and each gets the text it would get alone; Stop ends only its own rows; a full batch queues with
a place and a wait. The batch is stepped here by hand, so when a request joins is exact."""

from __future__ import annotations

import queue

import pytest

from core.decoding import Batches, DecodingBatch, DecodingRequest, PerPersonLimit, Waiting
from core.errors import WorkbenchError
from core.inference import end_ids


@pytest.fixture(scope="module")
def gpt2(registry):
    pipe = registry.get("text-generation", "tiny-gpt2", "fp32")
    return pipe.model, pipe.tokenizer


def request(tokenizer, *prompts, sequences=1, max_new_tokens=30, temperature=0.0, top_k=0, top_p=1.0,
            repetition_penalty=1.0, seed=0):
    return DecodingRequest(
        prompts=[tokenizer(prompt)["input_ids"] for prompt in prompts], sequences=sequences,
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, seeds=[seed + row % sequences for row in range(len(prompts) * sequences)])


def batch_of(gpt2, rows=32):
    model, tokenizer = gpt2
    return DecodingBatch(model, tokenizer, end_ids(model), max_rows=rows)


def drain(asked: DecodingRequest) -> tuple[list[str] | None, list, bool]:
    """(each row's text so far, the Waiting notes, whether it has ended) from its updates."""
    texts, waits, ended = None, [], False
    while True:
        try:
            update = asked.updates.get_nowait()
        except queue.Empty:
            return texts, waits, ended
        if isinstance(update, Waiting):
            waits.append(update)
        elif update is None:
            ended = True
        elif isinstance(update, BaseException):
            raise update
        else:
            asked.gathered = [old + new for old, new in zip(getattr(asked, "gathered", [""] * asked.rows), update)]
            texts = asked.gathered


def text_of(asked: DecodingRequest) -> list[str]:
    drain(asked)
    return getattr(asked, "gathered", [""] * asked.rows)


def alone(gpt2, asked: DecodingRequest) -> list[str]:
    batch = batch_of(gpt2)
    batch.add(asked)
    while not batch.idle:
        batch.step()
    return text_of(asked)


def test_requests_joining_and_leaving_a_running_batch_each_get_the_text_they_get_alone(gpt2):
    """Different prompts, lengths and settings: one greedy, one sampled with two sequences, one
    with a repetition penalty that ends early and leaves while the others go on."""
    tokenizer = gpt2[1]
    kinds = [dict(prompts=("The cat",), max_new_tokens=40),
             dict(prompts=("The farmer likes the red", ), sequences=2, temperature=1.2, top_k=20, top_p=0.9,
                  seed=5, max_new_tokens=30),
             dict(prompts=("A dog",), repetition_penalty=1.3, max_new_tokens=8)]
    make = lambda kind: request(tokenizer, *kind["prompts"], **{k: v for k, v in kind.items() if k != "prompts"})  # noqa: E731
    expected = [alone(gpt2, make(kind)) for kind in kinds]
    first, second, third = (make(kind) for kind in kinds)
    batch, widths = batch_of(gpt2), []
    batch.add(first)
    for _ in range(5):
        batch.step()
    batch.add(second)  # joins a batch five tokens in
    for _ in range(3):
        batch.step()
        widths.append(len(batch.rows))
    batch.add(third)  # joins later and leaves first
    while not batch.idle:
        widths.append(len(batch.rows))
        batch.step()
    assert max(widths) == 4  # all three shared the batch at some step
    assert [text_of(first), text_of(second), text_of(third)] == expected
    assert all(text.strip() for texts in expected for text in texts)


def test_stop_ends_only_its_own_rows(gpt2):
    tokenizer = gpt2[1]
    expected = alone(gpt2, request(tokenizer, "A dog", max_new_tokens=40, temperature=1.0, seed=3))
    stopped = request(tokenizer, "The cat", sequences=2, max_new_tokens=200)
    going = request(tokenizer, "A dog", max_new_tokens=40, temperature=1.0, seed=3)
    batch = batch_of(gpt2)
    batch.add(stopped)
    batch.add(going)
    for _ in range(3):
        batch.step()
    stopped.stop.set()
    batch.step()
    *_, ended = drain(stopped)
    assert ended and len(batch.rows) == 1
    while not batch.idle:
        batch.step()
    assert text_of(going) == expected
    assert all(len(tokenizer(text)["input_ids"]) < 10 for text in text_of(stopped))


def test_a_full_batch_queues_requests_with_their_place_and_wait_then_serves_them_in_turn(gpt2):
    tokenizer = gpt2[1]
    running = request(tokenizer, "The cat", sequences=2, max_new_tokens=20)
    next_one = request(tokenizer, "A dog", max_new_tokens=10)
    last_one = request(tokenizer, "The farmer", max_new_tokens=10)
    expected = [alone(gpt2, request(tokenizer, prompt, max_new_tokens=10)) for prompt in ("A dog", "The farmer")]
    batch = batch_of(gpt2, rows=2)
    batch.add(running)
    batch.step()  # a measured step time for the estimate
    batch.add(next_one)
    batch.add(last_one)
    _, waits, _ = drain(next_one)
    assert waits[-1].ahead == 0 and waits[-1].seconds > 0
    _, last_waits, _ = drain(last_one)
    assert last_waits[-1].ahead == 1 and last_waits[-1].seconds >= waits[-1].seconds
    assert text_of(next_one) == [""]  # nothing written while queued
    while not batch.idle:
        batch.step()
    assert [text_of(next_one), text_of(last_one)] == expected


def test_a_stopped_request_leaves_the_queue_without_starting(gpt2):
    tokenizer = gpt2[1]
    batch = batch_of(gpt2, rows=1)
    batch.add(request(tokenizer, "The cat", max_new_tokens=20))
    queued = request(tokenizer, "A dog", max_new_tokens=20)
    batch.add(queued)
    queued.stop.set()
    while not batch.idle:
        batch.step()
    texts, _, ended = drain(queued)
    assert ended and texts is None


def test_two_models_take_turns_step_by_step(registry):
    order, hooks = [], []
    batches = Batches()
    try:
        for name in ("tiny-gpt2", "tiny-chat"):
            pipe = registry.get("text-generation", name, "fp32")
            hooks.append(pipe.model.register_forward_pre_hook(lambda *_, name=name: order.append(name)))
            make = lambda pipe=pipe: DecodingBatch(pipe.model, pipe.tokenizer, set())  # noqa: E731
            batches.join(name, make, request(pipe.tokenizer, "The cat", max_new_tokens=12))
        while batches.busy:
            batches.step_all(between=lambda: None)
    finally:
        for hook in hooks:
            hook.remove()
    # Each joined with a prefill (one pass each), then the two alternate step by step.
    assert order[:2] == ["tiny-gpt2", "tiny-chat"]
    steps = order[2:]
    assert len(steps) == 22 and all(a != b for a, b in zip(steps, steps[1:]))


def test_one_person_runs_as_many_generations_at_once_as_the_limit_allows():
    limit = PerPersonLimit(1)
    with limit.hold("session-a"):
        with pytest.raises(WorkbenchError, match="running already"):
            with limit.hold("session-a"):
                pass
        with limit.hold("session-b"):  # someone else is not held up
            pass
    with limit.hold("session-a"):  # free again once the first ended
        pass


def test_a_request_that_fails_fails_alone_and_the_others_go_on(gpt2):
    tokenizer = gpt2[1]
    expected = alone(gpt2, request(tokenizer, "The cat", max_new_tokens=20))
    going = request(tokenizer, "The cat", max_new_tokens=20)
    broken = request(tokenizer, "A dog", max_new_tokens=20)
    broken.prompts = [[len(tokenizer) + 10_000]]  # a token the model has no embedding for
    batch = batch_of(gpt2)
    batch.add(going)
    batch.step()
    batch.add(broken)
    update = broken.updates.get_nowait()
    assert isinstance(update, IndexError)
    while not batch.idle:
        batch.step()
    assert text_of(going) == expected


def test_whole_number_settings_from_json_work(registry):
    from core import inference
    from core.inference import GenerationSettings

    settings = GenerationSettings(max_new_tokens=5, temperature=1, top_p=1, repetition_penalty=2, seed=3)
    *_, texts = inference.generate_stream(registry, "tiny-gpt2", "The cat", settings)
    assert texts[0].startswith("The cat") and len(texts[0]) > len("The cat")
