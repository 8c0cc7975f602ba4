"""Threads under load: how many threads the server and a training child should each use when
they share the machine's cores.

Both start with torch's default (one thread per core). While a fine-tune trains, the server still
generates for the people using the panels; with 2 threads each on a 2-core machine, each
process's OpenMP workers wait for cores the other holds. Measured here, side by side in one run:
generation (the packaged SmolLM2, greedy, through the app's decoding batch) and a training
stand-in (a child process doing float32 matrix products, as a training step does), for each pair
of thread counts; the chosen pair (core/cpu_threads.py) against torch's default.

    .venv/bin/python bench/threads_under_load.py [--repeats 3] [--smoke]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from common import ROOT, parse_args, record, table

# A training step's work without a model: float32 products of a size a small model's layers have.
LOAD = r"""
import sys, threading, time, torch
a, b = torch.randn(768, 768), torch.randn(768, 3072)
state = {"count": 0, "since": time.perf_counter()}
def listen():
    for line in sys.stdin:
        if line.startswith("start"):
            state["count"], state["since"] = 0, time.perf_counter()
        elif line.startswith("stop"):
            print(state["count"] / (time.perf_counter() - state["since"]), flush=True)
            return
listener = threading.Thread(target=listen, daemon=True)
listener.start()
print("ready", torch.get_num_threads(), flush=True)
while listener.is_alive():
    (a @ b).sum()
    state["count"] += 1
"""


def ratio(value: float, baseline: float) -> str:
    # With --smoke a generation can end before the training stand-in finishes one product.
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    # The eager path, so that no compile runs in the background while pairs are measured.
    os.environ["WORKBENCH_COMPILE"] = "0"
    import torch

    from core.cpu_threads import server_threads, training_threads, usable_cores
    from core.models import TEXT_GENERATION, ModelRegistry
    from core.threads import MODEL_THREAD, run_in_own_thread

    sys.path.insert(0, str(ROOT / "bench"))
    from infer import decoding_speed, prepare_models

    folder, _, generator = run_in_own_thread(lambda: prepare_models(args.smoke))
    registry = ModelRegistry(folder)
    pipe = registry.get(TEXT_GENERATION, generator)
    tokens = 8 if args.smoke else 32
    cores = usable_cores()
    chosen = (training_threads(cores), server_threads(cores, training_threads(cores)))
    default = (cores, cores)
    pairs = [default, chosen] + [pair for pair in [(1, cores), (cores, 1)] if pair not in (default, chosen)]

    def generation_rate(threads: int) -> float:
        MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(threads))
        return MODEL_THREAD.run_model_work(lambda: decoding_speed(pipe.model, pipe.tokenizer, 1, tokens))[1]

    generation_rate(cores)  # warm up
    alone = statistics.median(generation_rate(cores) for _ in range(repeats))
    results = {pair: ([], []) for pair in pairs}
    for _ in range(repeats):  # every pair once per round, so drift falls on all alike
        for pair in pairs:
            load_threads, server = pair
            child = subprocess.Popen([sys.executable, "-c", LOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "OMP_NUM_THREADS": str(load_threads)})
            child.stdout.readline()  # ready
            time.sleep(0.5)  # untimed: the load's threads are running before we measure
            child.stdin.write("start\n")
            child.stdin.flush()
            rate = generation_rate(server)
            child.stdin.write("stop\n")
            child.stdin.flush()
            load_rate = float(child.stdout.readline())
            child.wait()
            results[pair][0].append(rate)
            results[pair][1].append(load_rate)
    MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(cores))
    base_gen, base_load = (statistics.median(values) for values in results[default])
    rows = []
    for pair in pairs:
        gen, load = (statistics.median(values) for values in results[pair])
        name = "torch's default" if pair == default else "chosen" if pair == chosen else ""
        rows.append([f"{pair[0]} / {pair[1]}", name, f"{gen:.1f}", ratio(gen, base_gen), f"{load:.1f}",
                     ratio(load, base_load)])
    body = table(["threads: training / server", "", "generation steps/s", "ratio to default",
                  "training products/s", "ratio to default"], rows)
    body += (f"\n\n{cores} usable cores. Generation alone ({cores} threads): {alone:.1f} steps/s. {generator}, "
             f"greedy, {tokens} tokens, automatic precision, eager (no compiled step); the training stand-in "
             f"multiplies 768x768 by "
             f"768x3072 float32 matrices in a child process. Medians of {repeats} rounds, each pair once per "
             f"round.")
    record("Threads under load: the server beside a training run", body, args.smoke)


if __name__ == "__main__":
    main()
