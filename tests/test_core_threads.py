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
