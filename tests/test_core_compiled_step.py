"""The compiled decoding step (core/compiled_step.py), opt-in: the first generation decodes
eagerly and has the model thread compile once idle (a request asked meanwhile waits, and gets
the eager path's text); then a lone bf16 request decodes through it, computing what
the eager path computes (the same greedy text on SmolLM2; within bf16 rounding on a tiny model); someone joining moves the batch to the eager path with both
texts unchanged; a request too long for its cache, or a thread count it was not compiled for,
decodes eagerly."""

from __future__ import annotations

import pytest
import torch

from core.compiled_step import STATIC_POSITIONS, wait_until_compiled
from core.decoding import DecodingBatch, DecodingRequest
from core.models import TEXT_GENERATION, ModelRegistry
from core.threads import MODEL_THREAD

PROMPTS = ["The history of the city begins in", "The capital of France is", "Once upon a time, a small robot",
           "The best way to learn a language is"]


@pytest.fixture
def compiling(monkeypatch):
    monkeypatch.setenv("WORKBENCH_COMPILE", "1")


def request(tokenizer, prompt: str, tokens: int) -> DecodingRequest:
    return DecodingRequest(prompts=[tokenizer(prompt)["input_ids"]], sequences=1, max_new_tokens=tokens,
                           temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, seeds=[0])


def text_of(asked: DecodingRequest) -> str:
    chunks = []
    while not asked.updates.empty():
        update = asked.updates.get()
        if isinstance(update, BaseException):
            raise update
        if isinstance(update, list):
            chunks.append(update[0])
    return "".join(chunks)


def generate(model, tokenizer, prompts: list[str], tokens: int) -> tuple[list[str], list[bool]]:
    """On the model thread, each prompt alone through a decoding batch: (texts, whether each ran
    compiled). The thread is idle again after it, so a compile this started can run."""
    return MODEL_THREAD.run_model_work(lambda: _generate(model, tokenizer, prompts, tokens))


def _generate(model, tokenizer, prompts: list[str], tokens: int) -> tuple[list[str], list[bool]]:
    texts, compiled = [], []
    for prompt in prompts:
        batch = DecodingBatch(model, tokenizer, end_ids=set())
        asked = request(tokenizer, prompt, tokens)
        batch.add(asked)
        compiled.append(batch.static is not None)
        while not batch.idle:
            batch.step()
        texts.append(text_of(asked))
    return texts, compiled


def eager_then_compiled(model, tokenizer, prompts: list[str], tokens: int, monkeypatch):
    """The eager texts of `prompts` (compiling off), then one generation that starts the
    compile, and the wait for it: (eager texts, whether that generation ran compiled)."""
    monkeypatch.setenv("WORKBENCH_COMPILE", "0")
    eager, _ = generate(model, tokenizer, prompts, tokens)
    monkeypatch.setenv("WORKBENCH_COMPILE", "1")
    _, compiled = generate(model, tokenizer, prompts[:1], 2)
    assert wait_until_compiled(model, timeout=600)
    return eager, compiled


def compiled_agrees(compiled_model, eager_model, tokenizer, prompt: str, steps: int = 6) -> bool:
    """Teacher-forced on the same tokens: the compiled step's next-token log-probabilities at each
    step are within bf16 rounding of the eager model's. (On a tiny model, greedy texts in bf16
    can part at a near-tie: fused kernels round differently; seen on a fresh machine.)"""
    return MODEL_THREAD.run_model_work(lambda: _compiled_agrees(compiled_model, eager_model, tokenizer, prompt, steps))


def _compiled_agrees(compiled_model, eager_model, tokenizer, prompt: str, steps: int) -> bool:
    from core.compiled_step import compiled_step_for

    step = compiled_step_for(compiled_model)
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        outputs, tokens = [step.prefill(ids)], list(ids)
        for _ in range(steps):
            tokens.append(int(outputs[-1].argmax()))
            outputs.append(step.step(tokens[-1], len(tokens) - 1))
        eager = eager_model(input_ids=torch.tensor([tokens])).logits[0, len(ids) - 1:]
    compiled = torch.cat(outputs).float().log_softmax(-1)
    # Within bf16 rounding: 0.25 plus four bf16 steps of each log-probability's size. A model
    # with its weights times 1.5 has log-probabilities down to -32, where one step is 0.125; its
    # tail was 0.19 off (a fixed 0.25 failed one run), while another model's weights are far off.
    return torch.allclose(compiled, eager.float().log_softmax(-1), atol=0.25, rtol=4 * 2**-8)


def test_a_lone_request_decodes_compiled_with_the_text_of_the_eager_path(models_dir, compiling, monkeypatch):
    pipe = ModelRegistry(models_dir).get(TEXT_GENERATION, "tiny-gpt2", "bf16")
    model, tokenizer = pipe.model, pipe.tokenizer

    eager, compiled = eager_then_compiled(model, tokenizer, PROMPTS[:2], 12, monkeypatch)
    assert compiled == [False]  # the first ask has the compile start later, and decodes eagerly
    again, compiled = generate(model, tokenizer, PROMPTS[:2], 12)
    assert compiled == [True, True] and all(again)
    assert all(compiled_agrees(model, model, tokenizer, prompt) for prompt in PROMPTS[:2])
    # Too long for the static cache: eager.
    monkeypatch.setattr("core.compiled_step.STATIC_POSITIONS", 16)
    _, compiled = generate(model, tokenizer, PROMPTS[:1], 12)
    assert compiled == [False]
    monkeypatch.setattr("core.compiled_step.STATIC_POSITIONS", STATIC_POSITIONS)

    def someone_joins():  # the compiled row: the batch goes on eagerly, and both get their tokens
        batch = DecodingBatch(model, tokenizer, end_ids=set())
        first, second = request(tokenizer, PROMPTS[0], 12), request(tokenizer, PROMPTS[1], 12)
        batch.add(first)
        assert batch.static is not None
        for _ in range(4):
            batch.step()
        batch.add(second)
        assert batch.static is None
        while not batch.idle:
            batch.step()
        assert batch.idle and text_of(first) and text_of(second)

    MODEL_THREAD.run_model_work(someone_joins)
    # Compiled for this thread count only: another count decodes eagerly (and compiles its own).
    threads = MODEL_THREAD.run_model_work(torch.get_num_threads)
    # Set as a person sets it (OMP_NUM_THREADS), so the model thread keeps the count instead of
    # fitting it to the cores again before the next work (core/threads.py): without this, a
    # serial run (no OMP_NUM_THREADS) generated at the old count, through its compiled step.
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads + 1))
    MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(threads + 1))
    try:
        _, compiled = generate(model, tokenizer, PROMPTS[:1], 4)
        assert compiled == [False]
        assert wait_until_compiled(model, timeout=300)
    finally:
        MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(threads))


def test_a_request_asked_while_the_step_compiles_waits_for_it(models_dir, compiling):
    """The compile runs on the idle model thread, never beside a generation: inductor's tracing
    patches torch.nn.Module.__call__ for the whole process, and a generation stepping meanwhile
    in another thread failed."""
    from core.decoding import Waiting
    from core.inference import GenerationSettings, generate_stream, generation_updates

    registry = ModelRegistry(models_dir)
    settings = GenerationSettings(max_new_tokens=12, temperature=0)
    model = registry.get(TEXT_GENERATION, "tiny-gpt2", "bf16").model
    first = list(generate_stream(registry, "tiny-gpt2", PROMPTS[0], settings, precision="bf16"))[-1]
    (step,) = model.__dict__["_workbench_compiled_steps"].values()  # (not asked of the model thread: it compiles)
    assert step.started.wait(60)  # the first generation's end left the thread idle: it compiles now
    updates, compiled_at_each_text = [], []
    for update in generation_updates(registry, "tiny-gpt2", [PROMPTS[0]], settings, precision="bf16"):
        updates.append(update)
        if not isinstance(update, Waiting):
            compiled_at_each_text.append(step.done.is_set())
    assert updates[0] == Waiting(ahead=0, seconds=0, compiling=True)  # the page says what it waits for
    assert compiled_at_each_text and all(compiled_at_each_text)  # it waited for the compile, not beside it
    meanwhile = updates[-1][0]
    assert step.ready.is_set(), step.failure
    # It then decoded through the compiled step: its text is within bf16 rounding of the eager
    # one (compiled_agrees), not always the same on a tiny model.
    assert len(meanwhile[0]) > len(PROMPTS[0]) and len(first[0]) > len(PROMPTS[0])


def test_two_models_of_the_same_shapes_each_compute_with_their_own_weights(models_dir, tmp_path, compiling,
                                                                          monkeypatch):
    import transformers

    # A second tiny GPT-2 with other weights (a fine-tuned copy has the same shapes too).
    other = transformers.AutoModelForCausalLM.from_pretrained(models_dir / "tiny-gpt2")
    with torch.no_grad():
        for weight in other.parameters():
            weight.mul_(1.5)
    other.save_pretrained(tmp_path / "other-gpt2")
    transformers.AutoTokenizer.from_pretrained(models_dir / "tiny-gpt2").save_pretrained(tmp_path / "other-gpt2")
    first = ModelRegistry(models_dir).get(TEXT_GENERATION, "tiny-gpt2", "bf16")
    second = ModelRegistry(tmp_path).get(TEXT_GENERATION, "other-gpt2", "bf16")

    texts = {}
    for pipe in (first, second):
        eager, _ = eager_then_compiled(pipe.model, pipe.tokenizer, PROMPTS[:2], 12, monkeypatch)
        texts[id(pipe)] = eager
    assert texts[id(first)] != texts[id(second)]
    for pipe in (first, second, first):
        _, compiled = generate(pipe.model, pipe.tokenizer, PROMPTS[:2], 12)
        assert compiled == [True, True]
        assert compiled_agrees(pipe.model, pipe.model, pipe.tokenizer, PROMPTS[0])
    assert not compiled_agrees(second.model, first.model, first.tokenizer, PROMPTS[0])


def test_float32_is_never_compiled(models_dir, compiling):
    pipe = ModelRegistry(models_dir).get(TEXT_GENERATION, "tiny-gpt2", "fp32")
    _, compiled = generate(pipe.model, pipe.tokenizer, PROMPTS[:1], 4)
    assert compiled == [False] and not wait_until_compiled(pipe.model, timeout=1)


@pytest.mark.real
def test_compiled_smollm2_writes_the_greedy_text_of_the_eager_path(models_dir, smollm2_folder, compiling,
                                                                  monkeypatch):
    pipe = ModelRegistry(models_dir).get(TEXT_GENERATION, "packaged:SmolLM2-135M-Instruct", "bf16")

    # Two prompts (decoding them eagerly and compiled takes some 6 s; the compile, 50 s).
    eager, compiled = eager_then_compiled(pipe.model, pipe.tokenizer, PROMPTS[:2], 24, monkeypatch)
    assert compiled == [False]
    again, compiled = generate(pipe.model, pipe.tokenizer, PROMPTS[:2], 24)
    assert compiled == [True] * 2
    assert again == eager and all(len(text) > 30 for text in again)
