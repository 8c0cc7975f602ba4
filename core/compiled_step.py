"""A compiled decoding step for one row in bf16: the common case of one person generating.

Why: an eager decoding step of a small model on a CPU spends much of its time outside the matrix
products, in some fifteen hundred small operations (norms, rotary positions, views, casts), each
paying torch's per-call cost. torch.compile (inductor) with its `freezing` option fuses them and
packs the weights for oneDNN. Measured on SmolLM2-135M in bf16, one row (bench/infer.py, "against
the memory bound"): 1.6x the steps/s of the plain eager step, 1.25x to 1.4x the eager step with
packed weights (core/packed_weights.py), with 1 or 2 threads, and the same greedy text. Every
step attends over the whole static cache, so a longer one is slower (bench/compiled_decoding.py:
24.7 steps/s with 256 positions, 22.7 with 512); in float32 compiling gained about 1.15x, not
worth a compile that could change float32's greedy text. So it serves one row in bf16, with
prompt and tokens within 256 positions.

How: the step is compiled for one row and a static cache of STATIC_POSITIONS positions (static
shapes compile once; every step attends over the whole cache, so a longer one is slower).
Compiling is opt-in (WORKBENCH_COMPILE=1) and runs on the model thread once it is idle after
the model's first generation: about 35 s here, during which requests wait for it. It cannot run
beside generations: inductor traces with torch.fx, which patches torch.nn.Module.__call__ for the
whole process while it traces, so a generation stepping in another thread failed ("module is not
installed as a submodule"); and on 2 cores the compile's Python work starved that generation
of the interpreter lock (64 tokens took 50 s instead of 2.6). Compiling in a child process and
loading the result (AOTInductor) was measured and left out: 1.12x the packed eager step, not
1.25x to 1.4x, as it left the bf16 matrix products unpacked (README, Speed). Inductor writes
its CPU kernels for the thread count at compile time, so a step serves only at the thread count
it was compiled under (core/cpu_threads.py changes it while a run trains). Once ready, a request that arrives at an empty batch, alone,
with room for its prompt and tokens, decodes through it; if someone else joins, its cache
becomes an ordinary dynamic cache (core/decoding.py merges it with theirs) and the batch goes
on eagerly. A compile that fails leaves the eager path, which is always there.
"""

from __future__ import annotations

import atexit
import threading

STATIC_POSITIONS = 256  # prompt + new tokens that fit the compiled step's cache
COMPILED_ATTRIBUTE = "_workbench_compiled_steps"  # on the model: {thread count: CompiledStep}
EXIT_WAIT_SECONDS = 120  # how long a process that exits waits for a compile to end
_making = threading.Lock()
_compiling: set = set()  # steps whose compile runs now


@atexit.register
def _let_compiles_end() -> None:
    """A process that exits while a thread runs a torch op aborts ("terminate called without an
    active exception"): one that exits during a compile (a short script that generated once, a
    server stopped within its first minute) waits for it to end first."""
    for step in list(_compiling):
        step.done.wait(EXIT_WAIT_SECONDS)


class CompiledStep:
    """One model's compiled decoding step for one thread count, and the static cache it writes
    into (frozen, the compiled step keeps this very cache)."""

    def __init__(self, model, threads: int) -> None:
        from transformers import StaticCache

        self.model, self.threads = model, threads
        self.cache = StaticCache(config=model.config, max_cache_len=STATIC_POSITIONS)
        self.ready = threading.Event()  # compiled: steps may use it
        self.started = threading.Event()  # the compile began
        self.done = threading.Event()  # the compile ended, ready or failed
        self.failure: BaseException | None = None
        self.in_use = False  # a generation's row is in the cache
        self._compiled = None  # made by compile(): torch.compile's first use imports for 0.7 s

    def _eager_step(self, token, position):
        return self.model(input_ids=token, past_key_values=self.cache, use_cache=True,
                          cache_position=position).logits

    def compile(self) -> None:
        """On the idle model thread: compile (the first call does) on a dummy prompt, if the
        thread still runs with the thread count this step serves (else a later ask compiles
        one for the count then in use)."""
        import torch

        if torch.get_num_threads() != self.threads:
            self.failure = RuntimeError("the thread count changed before the compile began")
            self.model.__dict__.get(COMPILED_ATTRIBUTE, {}).pop(self.threads, None)
            self.done.set()
            return
        _compiling.add(self)
        self.started.set()
        try:
            self._compiled = torch.compile(self._eager_step, dynamic=False)
            # Freezing is read from inductor's config while it compiles (torch.compile's
            # `options` did not turn it on). Its caches of compiled graphs stay off: a frozen
            # graph holds the weights it was compiled with, and a cached one was handed to
            # another model of the same shapes, which then computed with the first one's
            # weights (seen in a test).
            with torch.no_grad(), torch._inductor.config.patch(freezing=True):
                self.prefill([0, 0])
                self.step(0, 2)
            self.ready.set()
        except Exception as error:  # noqa: BLE001 - the eager path serves instead
            self.failure = error
        finally:
            _compiling.discard(self)
            self.done.set()

    def fits(self, prompt_length: int, new_tokens: int) -> bool:
        return not self.in_use and prompt_length + new_tokens <= STATIC_POSITIONS

    def prefill(self, prompt: list[int]):
        """Read the prompt (eagerly) into the emptied static cache: the last position's logits."""
        import torch

        self.cache.reset()
        device = self.model.device
        return self.model(input_ids=torch.tensor([prompt], device=device), past_key_values=self.cache,
                          use_cache=True, logits_to_keep=1,
                          cache_position=torch.arange(len(prompt), device=device)).logits[:, -1, :]

    def step(self, token: int, position: int):
        """One compiled step: the logits after `token`, written at `position`."""
        import torch

        device = self.model.device
        return self._compiled(torch.tensor([[token]], device=device), torch.tensor([position], device=device))[:, -1, :]

    def as_dynamic_cache(self, length: int):
        """The first `length` positions as a DynamicCache (copies), for a batch others join."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=[(layer.keys[..., :length, :].clone(), layer.values[..., :length, :].clone())
                                            for layer in self.cache.layers])


def compiled_step_for(model) -> CompiledStep | None:
    """On the model thread: the model's compiled step for the thread count in use, if it is
    ready; None otherwise. The first ask for a bf16 model that can be compiled has the model
    thread compile it once it is idle."""
    import torch

    if not compilable(model):
        return None
    threads = torch.get_num_threads()
    with _making:
        steps = model.__dict__.setdefault(COMPILED_ATTRIBUTE, {})
        step = steps.get(threads)
        if step is None:
            step = steps[threads] = CompiledStep(model, threads)
            from core.threads import MODEL_THREAD

            MODEL_THREAD.run_when_idle(step.compile)
    return step if step.ready.is_set() else None


def compiling_now(model) -> bool:
    """Whether the model thread is compiling a step of `model` now (work asked waits for it)."""
    return any(step.started.is_set() and not step.done.is_set()
               for step in list(model.__dict__.get(COMPILED_ATTRIBUTE, {}).values()))


def wait_until_compiled(model, timeout: float) -> bool:
    """Wait for every compile started for `model` to end; True if all are ready. For benches
    and tests, which measure or compare the compiled step itself."""
    steps = list(model.__dict__.get(COMPILED_ATTRIBUTE, {}).values())
    return bool(steps) and all(step.done.wait(timeout) and step.ready.is_set() for step in steps)


def compilable(model) -> bool:
    """A bf16 model on the CPU that transformers can compile whole, when WORKBENCH_COMPILE=1
    (opt-in: requests wait while it compiles)."""
    import os

    import torch

    return (os.environ.get("WORKBENCH_COMPILE", "0") == "1" and model.dtype == torch.bfloat16
            and model.device.type == "cpu"
            and getattr(model, "_can_compile_fullgraph", False) and not hasattr(model, "get_base_model"))
