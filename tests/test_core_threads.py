"""The model thread: every request's model work runs on one thread (so torch keeps one OpenMP
pool, see core/threads.py), short work is not held up by a long generation, and a seeded
generation stays reproducible while other requests run between its steps."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import inference
from core.inference import GenerationSettings
from core.limits import MAX_NEW_TOKENS
from core.threads import MODEL_THREAD


def test_generation_and_classification_from_different_request_threads_run_on_one_thread(registry):
    asking_threads, generating_threads = set(), set()
    model = registry.get("text-generation", "tiny-gpt2").model
    handle = model.register_forward_pre_hook(lambda *_: generating_threads.add(threading.get_ident()))

    def generate():
        asking_threads.add(threading.get_ident())
        settings = GenerationSettings(max_new_tokens=5, seed=0)
        for _ in inference.generate_stream(registry, "tiny-gpt2", "The cat", settings):
            pass

    try:
        with ThreadPoolExecutor(4) as requests:  # like Gradio's worker threads
            list(requests.map(lambda _: generate(), range(3)))
            list(requests.map(lambda text: inference.classify(registry, "tiny-bert-sentiment", text),
                              ["good", "bad"]))
            short_work_threads = set(requests.map(
                lambda _: MODEL_THREAD.run_model_work(threading.get_ident), range(4)))
    finally:
        handle.remove()
    assert not generating_threads & asking_threads
    assert len(generating_threads) == 1
    assert short_work_threads == generating_threads
    assert threading.get_ident() not in generating_threads


def test_a_classification_asked_during_a_long_generation_answers_before_it_ends(registry):
    alone = inference.classify(registry, "tiny-bert-sentiment", "What a lovely day.")
    stream = inference.generate_stream(registry, "tiny-gpt2", "The cat",
                                       GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, num_sequences=4))
    next(stream)  # the generation is under way on the model thread
    try:
        with ThreadPoolExecutor(1) as other_request:
            answer = other_request.submit(inference.classify, registry, "tiny-bert-sentiment", "What a lovely day.")
            for count, _ in enumerate(stream):  # keep the generation going while waiting
                if answer.done():
                    break
            assert answer.result(timeout=0) == pytest.approx(alone)
        assert count < 50, "the classification should run within a few tokens"
    finally:
        stream.close()


def test_a_seeded_generation_gives_the_same_text_while_others_classify_between_its_tokens(registry):
    settings = GenerationSettings(max_new_tokens=60, temperature=1.2, seed=11)
    *_, quiet = inference.generate_stream(registry, "tiny-gpt2", "A dog", settings)
    busy = threading.Event()

    def keep_classifying():
        while not busy.is_set():
            inference.classify(registry, "tiny-bert-sentiment", "Another text to score.")

    with ThreadPoolExecutor(2) as others:
        for _ in range(2):
            others.submit(keep_classifying)
        try:
            *_, during = inference.generate_stream(registry, "tiny-gpt2", "A dog", settings)
        finally:
            busy.set()
    assert during == quiet


def test_a_failure_in_model_work_reaches_its_caller_and_the_thread_keeps_serving():
    with pytest.raises(ZeroDivisionError):
        MODEL_THREAD.run_model_work(lambda: 1 / 0)
    assert MODEL_THREAD.run_model_work(lambda: 6 * 7) == 42


def test_model_work_asked_from_the_model_thread_runs_at_once_instead_of_waiting_for_itself():
    assert MODEL_THREAD.run_model_work(lambda: MODEL_THREAD.run_model_work(lambda: "inner")) == "inner"


def test_the_inside_views_and_question_answering_do_their_torch_work_on_the_model_thread(registry):
    """torch ops on a request thread would give it an OpenMP pool of its own (core/threads.py):
    a torch function mode, which is per thread, sees every torch call made on the calling one."""
    import torch
    from torch.overrides import TorchFunctionMode

    from core import answer, explain

    class Recorder(TorchFunctionMode):
        calls: list = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    text = "the cat likes the red house."
    with Recorder() as recorder:
        explain.attention(registry, "fill-mask", "tiny-bert-mlm", text, layer=1)
        explain.token_probabilities(registry, "tiny-gpt2", "the cat likes", max_new_tokens=3)
        explain.attributions(registry, "tiny-bert-sentiment", text)
        answer.answer(registry, "tiny-bert-qa", text, "what does the cat like?")
    computed = [name for name in recorder.calls if name != "device"]  # naming a device computes nothing
    assert computed == [], f"torch ran on the request thread: {sorted(set(computed))[:10]}"
    assert torch.is_tensor(torch.zeros(1))  # the mode is gone


def test_classifications_asked_together_run_as_one_call_with_the_answers_each_gets_alone(registry):
    import time

    texts = ["What a lovely day.", "The soup was cold.", "good", "A long film, but the ending made up for it.",
             "bad", "I waited an hour.", "The staff were kind.", "It broke after two days."]
    alone = [inference.classify(registry, "tiny-bert-sentiment", text) for text in texts]
    model = registry.get("text-classification", "tiny-bert-sentiment").model
    rows = []
    hook = model.register_forward_pre_hook(lambda _module, args, kwargs: rows.append(
        len(kwargs.get("input_ids", args[0] if args else None))), with_kwargs=True)

    holding = threading.Event()

    def hold_until_all_asked():
        # On the model thread: everyone's classification is queued behind this before it ends
        # (as when a class presses Classify together while a step runs).
        holding.set()
        while MODEL_THREAD._tasks.qsize() < len(texts):
            time.sleep(0.001)

    try:
        with ThreadPoolExecutor(len(texts) + 1) as people:
            held = people.submit(MODEL_THREAD.run_model_work, hold_until_all_asked)
            holding.wait()
            answers = list(people.map(lambda text: inference.classify(registry, "tiny-bert-sentiment", text), texts))
            held.result()
    finally:
        hook.remove()
    assert rows == [len(texts)]  # one forward pass for all eight
    assert answers == [pytest.approx(scores, abs=1e-5) for scores in alone]


def test_one_bad_input_in_a_batch_fails_alone(registry):
    import time

    holding = threading.Event()

    def hold():
        holding.set()
        while MODEL_THREAD._tasks.qsize() < 3:
            time.sleep(0.001)

    def run_many(items):
        if "bad" in items and len(items) > 1:
            raise ValueError("one of them")
        if items == ["bad"]:
            raise ValueError("this one")
        return [item.upper() for item in items]

    with ThreadPoolExecutor(4) as people:
        held = people.submit(MODEL_THREAD.run_model_work, hold)
        holding.wait()
        asked = [people.submit(MODEL_THREAD.run_batchable, "key", item, run_many) for item in ("a", "bad", "c")]
        held.result()
        assert asked[0].result() == "A" and asked[2].result() == "C"
        with pytest.raises(ValueError, match="this one"):
            asked[1].result()


def asked_together(calls: list) -> list:
    """Run `calls` from threads of their own while the model thread is held, so that all of them
    wait there together; their results in order."""
    import time

    holding = threading.Event()

    def hold():
        holding.set()
        while MODEL_THREAD._tasks.qsize() < len(calls):
            time.sleep(0.001)

    with ThreadPoolExecutor(len(calls) + 1) as people:
        held = people.submit(MODEL_THREAD.run_model_work, hold)
        holding.wait()
        results = list(people.map(lambda call: call(), calls))
        held.result()
    return results


def test_fill_masks_asked_together_give_what_each_gives_alone(registry):
    texts = ["The cat likes the [MASK] house.", "The [MASK] sat on the [MASK].", "A [MASK] dog."]
    alone = [inference.fill_mask(registry, "tiny-bert-mlm", text, top_k=3) for text in texts]
    together = asked_together([lambda text=text: inference.fill_mask(registry, "tiny-bert-mlm", text, top_k=3)
                               for text in texts])
    for got, expected in zip(together, alone):
        assert [[(p.token, p.sequence) for p in mask] for mask in got] == \
               [[(p.token, p.sequence) for p in mask] for mask in expected]
        assert [[p.score for p in mask] for mask in got] == \
               [[pytest.approx(p.score, abs=1e-5) for p in mask] for mask in expected]


def rows_per_forward_pass(model) -> tuple[list[int], object]:
    """The rows of each forward pass `model` runs from now on (a list that grows), and the hook to
    remove."""
    rows = []
    hook = model.register_forward_pre_hook(lambda _module, args, kwargs: rows.append(
        len(kwargs.get("input_ids", args[0] if args else None))), with_kwargs=True)
    return rows, hook


def asked_together_counting_rows(model, calls: list) -> tuple[list, list[int]]:
    """`asked_together(calls)`, and the rows of each forward pass `model` ran meanwhile."""
    rows, hook = rows_per_forward_pass(model)
    try:
        return asked_together(calls), rows
    finally:
        hook.remove()


def result_or_error(call):
    """What `call` returns, or the WorkbenchError it raises (so that one failure among calls asked
    together does not hide the others' results)."""
    from core.errors import WorkbenchError

    try:
        return call()
    except WorkbenchError as error:
        return error


# Texts of different lengths (one cut to the limit), so that the batch pads most of them.
INSIDE_TEXTS = ["the cat likes the red house every day.", "a dog", " ".join(["my friend reads a long book."] * 20),
                "the teacher paints the old bridge."]


@pytest.mark.parametrize("task, name", [("fill-mask", "tiny-bert-mlm"), ("text-generation", "tiny-gpt2")])
def test_attention_maps_asked_together_run_in_one_forward_pass_and_give_what_each_gives_alone(registry, task, name):
    from core import explain

    # Each asks its own layer and head: the one pass returns every layer.
    asks = [(text, 1 + index % 2, index % 3) for index, text in enumerate(INSIDE_TEXTS)]
    alone = [explain.attention(registry, task, name, text, layer, head) for text, layer, head in asks]
    together, rows = asked_together_counting_rows(
        registry.get(task, name, explain.EXPLAIN_PRECISION).model,
        [lambda ask=ask: explain.attention(registry, task, name, *ask) for ask in asks])
    assert rows == [len(asks)]
    assert alone[2].truncated and len({len(view.tokens) for view in alone}) > 2  # the batch was padded
    for got, expected in zip(together, alone):
        assert (got.tokens, got.truncated, got.layer, got.head) == (expected.tokens, expected.truncated,
                                                                    expected.layer, expected.head)
        assert got.weights == [pytest.approx(row, abs=1e-5) for row in expected.weights]


def test_token_probabilities_asked_together_are_written_together_scored_in_one_pass_and_each_what_it_is_alone(
        registry):
    from core import explain

    asks = [dict(prompt="the cat likes", continuation=" the red house", top_k=3),
            dict(prompt="a dog", max_new_tokens=6, top_k=2),
            dict(prompt="the teacher paints the old bridge in the morning. my friend", max_new_tokens=3),
            dict(prompt="our team", continuation="builds a small garden every day.", top_k=4)]
    alone = [explain.token_probabilities(registry, "tiny-gpt2", **ask) for ask in asks]
    together, rows = asked_together_counting_rows(
        registry.get("text-generation", "tiny-gpt2", explain.EXPLAIN_PRECISION).model,
        [lambda ask=ask: explain.token_probabilities(registry, "tiny-gpt2", **ask) for ask in asks])
    *writing, scoring = rows
    assert scoring == len(asks)  # one forward pass scores every continuation, given or written
    assert set(writing) == {2} and len(writing) <= 6  # one greedy generation writes the two not given
    for got, expected in zip(together, alone):
        assert [(c.token, c.text, [token for token, _ in c.alternatives]) for c in got] == \
               [(c.token, c.text, [token for token, _ in c.alternatives]) for c in expected]
        assert [c.probability for c in got] == [pytest.approx(c.probability, abs=1e-5) for c in expected]
        assert [[p for _, p in c.alternatives] for c in got] == \
               [[pytest.approx(p, abs=1e-5) for _, p in c.alternatives] for c in expected]


# A lone surrogate is valid Python text (a JSON request can send "\ud800") that no tokenizer
# takes: it fails on the model thread, inside the batch.
UNTOKENIZABLE = "the cat \ud800 likes"


def test_an_attention_text_no_tokenizer_takes_fails_alone_among_texts_asked_with_it(registry):
    from core import explain
    from core.errors import WorkbenchError

    texts = [INSIDE_TEXTS[0], UNTOKENIZABLE, INSIDE_TEXTS[1]]
    alone = [explain.attention(registry, "fill-mask", "tiny-bert-mlm", text, 2) for text in (texts[0], texts[2])]
    (first, failed, last), rows = asked_together_counting_rows(
        registry.get("fill-mask", "tiny-bert-mlm", explain.EXPLAIN_PRECISION).model,
        [lambda text=text: result_or_error(lambda: explain.attention(registry, "fill-mask", "tiny-bert-mlm", text, 2))
         for text in texts])
    assert isinstance(failed, WorkbenchError) and "failed on this input" in str(failed)
    assert rows == [1, 1]  # the batch failed, so each ran alone (the failing one before any pass)
    for got, expected in zip((first, last), alone):
        assert got.tokens == expected.tokens
        assert got.weights == [pytest.approx(row, abs=1e-5) for row in expected.weights]


def test_a_prompt_no_tokenizer_takes_fails_alone_among_token_probabilities_asked_with_it(registry):
    from core import explain
    from core.errors import WorkbenchError

    prompts = ["the cat likes", UNTOKENIZABLE, "a dog sees"]
    alone = [explain.token_probabilities(registry, "tiny-gpt2", prompt, " the red house")
             for prompt in (prompts[0], prompts[2])]
    (first, failed, last), rows = asked_together_counting_rows(
        registry.get("text-generation", "tiny-gpt2", explain.EXPLAIN_PRECISION).model,
        [lambda prompt=prompt: result_or_error(
            lambda: explain.token_probabilities(registry, "tiny-gpt2", prompt, " the red house"))
         for prompt in prompts])
    assert isinstance(failed, WorkbenchError) and "failed on this input" in str(failed)
    assert rows == [1, 1]  # the batch failed, so each ran alone (the failing one before any pass)
    for got, expected in zip((first, last), alone):
        assert [c.token for c in got] == [c.token for c in expected]
        assert [c.probability for c in got] == [pytest.approx(c.probability, abs=1e-5) for c in expected]
