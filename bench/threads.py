"""Generation after a classification: model work on the request threads vs on the model thread.

The app serves requests from long-lived worker threads. If each ran its model work itself, a
classification would leave an OpenMP pool on its thread and slow every later generation on
another (core/threads.py explains why). Three ways, the same greedy 48-token generation:

- reference: the generation alone, on one request thread, nothing else has run
- baseline: one request thread classifies, another generates, each running the model itself
- ours: the same two request threads call core.inference, which runs the work on the model thread

    .venv/bin/python bench/threads.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor

from common import median_seconds, parse_args, record, table
from infer import greedy_generation, prepare_models

SENTENCE = "The staff were kind and the food was wonderful."


def main() -> None:
    args, repeats = parse_args(5, __doc__)

    from core import inference
    from core.models import TEXT_CLASSIFICATION, ModelRegistry
    from core.threads import run_in_own_thread

    folder, classifier, generator = run_in_own_thread(lambda: prepare_models(args.smoke))
    registry = ModelRegistry(folder)
    classify_pipe = registry.get(TEXT_CLASSIFICATION, classifier)
    tokens = 8 if args.smoke else 48
    raw_generate, ours_generate, _ = greedy_generation(registry, generator, tokens)

    def measure(classify, generate) -> float:
        """Median generation time on request thread B, after request thread A classified.
        Both threads live until the end, as Gradio's workers do; they end before the next way."""
        with ThreadPoolExecutor(1) as thread_a, ThreadPoolExecutor(1) as thread_b:
            thread_b.submit(generate).result()  # warm up
            times = []
            for _ in range(repeats):
                if classify:
                    thread_a.submit(classify).result()
                times.append(thread_b.submit(lambda: median_seconds(generate, 1)[0]).result())
            return statistics.median(times)

    alone = measure(None, raw_generate)
    baseline = measure(lambda: classify_pipe(SENTENCE), raw_generate)
    ours = measure(lambda: inference.classify(registry, classifier, SENTENCE), ours_generate)
    rows = [
        ["reference: generation alone", "model.generate on its request thread", alone, 1.0],
        ["baseline: after a classification on another thread", "model.generate on its request thread",
         baseline, baseline / alone],
        ["ours: after a classification", "generate_stream (work on the model thread)", ours, ours / alone],
    ]
    body = table(["way", "generation", f"{tokens} tokens, s", "x alone"], rows)
    body += (f"\n\nModels: {classifier}, {generator}; medians of {repeats} rounds. Ratio ours vs "
             f"baseline: generation is {baseline / ours:.2f}x faster with the model thread.")
    record("Threads: generation after a classification", body, args.smoke)


if __name__ == "__main__":
    main()
