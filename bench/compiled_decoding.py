"""Compiled decoding: what transformers' static cache and torch.compile would add to the app's
generation here, and what compiling costs.

Measured side by side in one run, greedy, one sequence, on the packaged SmolLM2 in float32 and
bf16, with the process's thread count given by --threads (1: the issue's setting; the app uses
every core unless a run trains):
- the app's path: a dynamic cache, eager, and in bf16 its packed weights (core/packed_weights.py);
- eager with transformers' StaticCache;
- one decoding step under torch.compile (inductor, static shapes), plain and with inductor's
  `freezing` (weights packed for oneDNN, as the app packs them, and constant-folded):
  seconds to compile, steps/s, whether the greedy tokens are the same.
Each compiled step writes into one static cache of its own (frozen, it must stay the same
object), emptied between runs. Inductor writes its CPU kernels for the thread count at compile
time, so each is compiled under the thread count it is measured with.

    .venv/bin/python bench/compiled_decoding.py [--repeats 3] [--smoke]   (about 6 minutes)
"""

from __future__ import annotations

import statistics
import time

from common import parse_args, record, table

CACHE_POSITIONS = (256, 512)


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    import copy

    import torch
    from transformers import StaticCache

    from core.models import TEXT_GENERATION, ModelRegistry
    from core.packed_weights import pack_linear_weights
    from core.threads import MODEL_THREAD, run_in_own_thread
    from infer import GENERATION_PROMPT, decoding_speed, prepare_models

    folder, _, generator = run_in_own_thread(lambda: prepare_models(args.smoke))
    registry = ModelRegistry(folder)
    float32 = registry.get(TEXT_GENERATION, generator, "fp32")
    tokenizer = float32.tokenizer
    prompt = tokenizer(GENERATION_PROMPT)["input_ids"]
    tokens = 8 if args.smoke else 64
    positions = (64,) if args.smoke else CACHE_POSITIONS

    def static_step(model, length: int, frozen: bool = False):
        """(one decoding step writing into a static cache of its own, that cache). The frozen
        step is a function of its own: dynamo keeps compiled graphs per function, and the same
        function compiled again with freezing on would reuse the plain graph (its guards pass)."""
        cache = StaticCache(config=model.config, max_cache_len=length)

        def step(last, position):
            return model(input_ids=last, past_key_values=cache, use_cache=True, cache_position=position).logits

        def frozen_step(last, position):
            return model(input_ids=last, past_key_values=cache, use_cache=True, cache_position=position).logits
        return (frozen_step if frozen else step), cache

    def static_run(model, step, cache) -> tuple[float, list[int]]:
        """(seconds for the decoding steps, the greedy tokens) through `step`."""
        cache.reset()
        ids = torch.tensor([prompt])
        with torch.no_grad():
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True,
                           cache_position=torch.arange(ids.shape[1])).logits
            chosen = [int(logits[0, -1].argmax())]
            started = time.perf_counter()
            for position in range(ids.shape[1], ids.shape[1] + tokens - 1):
                logits = step(torch.tensor([[chosen[-1]]]), torch.tensor([position]))
                chosen.append(int(logits[0, -1].argmax()))
        return time.perf_counter() - started, chosen

    def measure():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        rows = []
        plain = copy.deepcopy(float32.model).to(torch.bfloat16)
        packed = copy.deepcopy(plain)
        pack_linear_weights(packed)
        # The compiler cannot lower products of weights packed outside it: the static and
        # compiled ways run bf16 with plain weights (frozen, the compiler packs them itself).
        for name, app_model, model in (("float32", float32.model, float32.model), ("bf16", packed, plain)):
            for length in positions:
                eager, eager_cache = static_step(model, length)
                ways = {"static cache, eager": (eager, eager_cache)}
                compile_seconds = {}
                for way, frozen in (("compiled", False), ("compiled, frozen", True)):
                    step, cache = static_step(model, length, frozen)
                    compiled = torch.compile(step, dynamic=False)
                    started = time.perf_counter()
                    # The first run compiles. Freezing is read from inductor's config as it
                    # compiles (torch.compile's `options` did not turn it on: measured no faster).
                    with torch._inductor.config.patch(freezing=frozen):
                        static_run(model, compiled, cache)
                    compile_seconds[way] = time.perf_counter() - started
                    ways[way] = (compiled, cache)
                expected = static_run(model, eager, eager_cache)[1]
                rates = {"app": []} | {way: [] for way in ways}
                same = {way: static_run(model, *ways[way])[1] == expected for way in ways}
                for _ in range(repeats):  # in turns
                    rates["app"].append(decoding_speed(app_model, tokenizer, 1, tokens)[1])
                    for way, (step, cache) in ways.items():
                        rates[way].append((tokens - 1) / static_run(model, step, cache)[0])
                rate = {way: statistics.median(values) for way, values in rates.items()}
                best = max(("compiled", "compiled, frozen"), key=lambda way: rate[way])
                rows.append([name, length, f"{rate['app']:.1f}", f"{rate['static cache, eager']:.1f}",
                             f"{rate['compiled']:.1f} ({compile_seconds['compiled']:.0f} s)",
                             f"{rate['compiled, frozen']:.1f} ({compile_seconds['compiled, frozen']:.0f} s)",
                             f"{rate[best] / rate['app']:.2f}x", "yes" if all(same.values()) else
                             "no: " + ", ".join(way for way, ok in same.items() if not ok)])
                torch._dynamo.reset()  # each compiled step stands alone
        torch.set_num_threads(threads)
        return rows

    rows = MODEL_THREAD.run_model_work(measure)
    body = table(["precision", "static positions", "app (eager; bf16 packed): steps/s", "static cache, eager",
                  "compiled (first run)", "compiled, frozen (first run)", "ratio best compiled / app",
                  "same greedy tokens"], rows)
    body += (f"\n\n{generator}, greedy, one sequence of {tokens} tokens, one thread, medians of {repeats} runs "
             f"in turns; steps/s, and in brackets the first run's seconds, compiling included (inductor's "
             f"cache on disk shortens a compile it has seen). Static positions: the length of the static "
             f"cache, which every step attends over; prompt and tokens must fit it, and another length or "
             f"row count compiles again.")
    record("Compiled decoding: static cache and torch.compile", body, args.smoke)


if __name__ == "__main__":
    main()
