"""Compiled decoding: what transformers' static cache and torch.compile would add to generation
here, and what the compilation costs.

Measured side by side in one run, greedy, one sequence, one thread, on the packaged SmolLM2 in
bf16 and in float32:
- the app's path (a dynamic cache, eager; in bf16 with its packed weights, core/packed_weights.py)
  against eager with a static cache (transformers' StaticCache), and
- the same step under torch.compile (inductor, static shapes): seconds to compile, steps/s,
  and whether the greedy tokens are the same.
The app keeps the eager path: see bench/RESULTS.md for the figures this writes and why.

    .venv/bin/python bench/compiled_decoding.py [--repeats 3] [--smoke]
"""

from __future__ import annotations

import statistics
import time

from common import parse_args, record, table

CACHE_LENGTH = 256


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    import copy

    import torch
    from transformers import StaticCache

    from core.models import TEXT_GENERATION, configure
    from core.packed_weights import pack_linear_weights
    from core.threads import MODEL_THREAD, run_in_own_thread
    from infer import GENERATION_PROMPT, decoding_speed, prepare_models

    folder, _, generator = run_in_own_thread(lambda: prepare_models(args.smoke))
    registry = configure(folder)
    float32 = registry.get(TEXT_GENERATION, generator, "fp32")
    tokenizer = float32.tokenizer
    prompt = tokenizer(GENERATION_PROMPT)["input_ids"]
    tokens = 8 if args.smoke else 64

    def static_run(model, step) -> tuple[float, list[int]]:
        """(seconds for the decoding steps, the greedy tokens) with a static cache."""
        cache = StaticCache(config=model.config, max_cache_len=CACHE_LENGTH)
        ids = torch.tensor([prompt])
        with torch.no_grad():
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True,
                           cache_position=torch.arange(ids.shape[1])).logits
            chosen = [int(logits[0, -1].argmax())]
            started = time.perf_counter()
            for position in range(ids.shape[1], ids.shape[1] + tokens - 1):
                logits = step(model, torch.tensor([[chosen[-1]]]), cache, torch.tensor([position]))
                chosen.append(int(logits[0, -1].argmax()))
        return time.perf_counter() - started, chosen

    def eager_step(model, last, cache, position):
        return model(input_ids=last, past_key_values=cache, use_cache=True, cache_position=position).logits

    def measure():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        rows = []
        plain = copy.deepcopy(float32.model).to(torch.bfloat16)
        packed = copy.deepcopy(plain)
        pack_linear_weights(packed)
        # The compiler lowers oneDNN's packed products only for weights it packed itself (under
        # its `freezing` option), so the compiled and static columns run bf16 with plain weights.
        for name, app_model, model in (("float32", float32.model, float32.model), ("bf16", packed, plain)):
            compiled = torch.compile(eager_step, dynamic=False)
            started = time.perf_counter()
            _, compiled_tokens = static_run(model, compiled)  # the first run compiles
            compile_seconds = time.perf_counter() - started
            _, eager_tokens = static_run(model, eager_step)
            app, static, fast = [], [], []
            for _ in range(repeats):  # in turns
                app.append(decoding_speed(app_model, tokenizer, 1, tokens)[1])
                static.append((tokens - 1) / static_run(model, eager_step)[0])
                fast.append((tokens - 1) / static_run(model, compiled)[0])
            app_rate, static_rate, fast_rate = (statistics.median(v) for v in (app, static, fast))
            rows.append([name, f"{app_rate:.1f}", f"{static_rate:.1f}", f"{fast_rate:.1f}",
                         f"{fast_rate / app_rate:.2f}x", f"{compile_seconds:.0f} s",
                         "yes" if compiled_tokens == eager_tokens else "no"])
        torch.set_num_threads(threads)
        return rows

    rows = MODEL_THREAD.run_model_work(measure)
    body = table(["precision", "app (dynamic cache, eager, bf16 packed): steps/s", "static cache, eager", "static cache, compiled",
                  "ratio compiled / app", "first run (compiling)", "same greedy tokens"], rows)
    body += (f"\n\n{generator}, greedy, one sequence of {tokens} tokens, one thread, medians of {repeats} runs "
             f"in turns. Compiled: torch.compile (inductor) of one decoding step with a static cache of "
             f"{CACHE_LENGTH} positions and one row; another row count or cache length compiles again. The "
             f"static and compiled columns run bf16 with plain weights: the compiler lowers oneDNN's packed "
             f"products only for weights it packed itself.")
    record("Compiled decoding: static cache and torch.compile", body, args.smoke)


if __name__ == "__main__":
    main()
