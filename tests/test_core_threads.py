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
