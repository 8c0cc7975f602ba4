"""A class at once: N people press Generate at the same moment (each a gradio_client of their
own), 64 new tokens each on the packaged SmolLM2, against the app before continuous batching
(commit BASELINE_COMMIT, where the server ran generations strictly one after another).

Targets (issue 22): with 8 people the slowest finishes within 2.5x one person alone and the
median first token comes within 1 s; one person alone is no slower than before (within 5%).
Also 16 and 32 people: throughput (tokens/s) and p95 first token against people.

    .venv/bin/python bench/concurrency.py [--repeats 3] [--smoke]

--smoke: 2 people, 8 tokens on a tiny GPT-2 (the script is checked, not SmolLM2's speed), and as
baseline this app with one-row batches (--batch-rows 1, served one after another), so that no
checkout is needed.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import ROOT, Server, parse_args, record, table

BASELINE_COMMIT = "1da6701"  # the last commit before continuous batching
MODEL = "packaged:SmolLM2-135M-Instruct"
PROMPTS = ["The old lighthouse keeper", "In the spring of 1920, the town", "My grandmother's kitchen",
           "The best way to learn a language", "A small robot woke up", "The history of bread",
           "On the far side of the mountain", "Every morning the baker"]


def baseline_checkout() -> str:
    """The app at BASELINE_COMMIT, unpacked from this repository's history into a temp folder."""
    folder = tempfile.mkdtemp(prefix="workbench-baseline-")
    archive = subprocess.run(["git", "archive", BASELINE_COMMIT], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def class_at_once(server: Server, people: int, tokens: int, tokenizer, model: str = MODEL) -> dict:
    """Every person submits at the same moment; returns each one's first-token and end times
    (seconds from the moment they pressed) and the tokens written."""
    from gradio_client import Client

    clients = [Client(server.url, verbose=False) for _ in range(people)]
    start = threading.Barrier(people)
    firsts, ends, written = [0.0] * people, [0.0] * people, [0] * people

    def one(index: int) -> None:
        prompt = PROMPTS[index % len(PROMPTS)]
        start.wait()
        pressed = time.perf_counter()
        job = clients[index].submit(prompt=prompt, model=model, compare_prompt="", max_new_tokens=tokens,
                                    temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=index,
                                    num_sequences=1, chat_mode=False, api_name="/generate")
        for output in job:
            if not firsts[index] and len(output[0]) > len(prompt):
                firsts[index] = time.perf_counter() - pressed
        ends[index] = time.perf_counter() - pressed
        text = job.result()[0]
        written[index] = len(tokenizer(text)["input_ids"]) - len(tokenizer(prompt)["input_ids"])

    threads = [threading.Thread(target=one, args=(index,)) for index in range(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"firsts": firsts, "ends": ends, "tokens": sum(written), "wall": max(ends)}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    from transformers import AutoTokenizer

    if args.smoke:
        from infer import prepare_models

        models, _, model = prepare_models(True)
        tokenizer = AutoTokenizer.from_pretrained(models / model)
    else:
        from core.packaged import model_folder

        models, model = None, MODEL
        tokenizer = AutoTokenizer.from_pretrained(model_folder(MODEL))
    people, tokens, curve = (2, 8, []) if args.smoke else (8, 64, [16, 32])
    checkout = None if args.smoke else baseline_checkout()
    app = [sys.executable, "app.py"]
    baseline = Server([*app, "--batch-rows", "1"], models_dir=models) if args.smoke else Server(app, checkout)
    ours = Server(app, models_dir=models)
    runs: dict[tuple[str, int], list[dict]] = {}

    def class_of(server, count, new_tokens):
        return class_at_once(server, count, new_tokens, tokenizer, model)

    try:
        for server in (baseline, ours):  # both load the model before anything is timed
            class_of(server, 1, 2)
        for _ in range(repeats):  # in turns, so drift in the machine's speed falls on both alike
            for count in (1, people):
                for name, server in (("baseline", baseline), ("ours", ours)):
                    runs.setdefault((name, count), []).append(class_of(server, count, tokens))
            for count in curve:
                runs.setdefault(("ours", count), []).append(class_of(ours, count, tokens))
    finally:
        baseline.stop()
        ours.stop()
        if checkout:
            shutil.rmtree(checkout, ignore_errors=True)

    def median(name, count, measure):
        return statistics.median(measure(run) for run in runs[(name, count)])

    alone = {name: median(name, 1, lambda run: run["wall"]) for name in ("baseline", "ours")}
    first_alone = {name: median(name, 1, lambda run: run["firsts"][0]) for name in ("baseline", "ours")}
    rows = []
    for name in ("baseline", "ours"):
        rows.append([name, 1, first_alone[name], alone[name], 1.0, median(name, 1, lambda r: r["tokens"] / r["wall"])])
        rows.append([name, people, median(name, people, lambda r: statistics.median(r["firsts"])),
                     median(name, people, lambda r: r["wall"]), median(name, people, lambda r: r["wall"]) / alone[name],
                     median(name, people, lambda r: r["tokens"] / r["wall"])])
    for count in curve:
        rows.append(["ours", count, median("ours", count, lambda r: statistics.median(r["firsts"])),
                     median("ours", count, lambda r: r["wall"]), median("ours", count, lambda r: r["wall"]) / alone["ours"],
                     median("ours", count, lambda r: r["tokens"] / r["wall"])])
    body = table(["server", "people", "median first token (s)", "slowest finishes (s)", "x one alone",
                  "tokens/s, all together"], rows)
    if curve:
        body += "\n\n" + table(["people", "p95 first token (s)", "tokens/s"], [
            [count, median("ours", count, lambda r: p95(r["firsts"])), median("ours", count, lambda r: r["tokens"] / r["wall"])]
            for count in (1, people, *curve)])
    slowest = median("ours", people, lambda r: r["wall"]) / alone["ours"]
    first = median("ours", people, lambda r: statistics.median(r["firsts"]))
    alone_ratio = alone["ours"] / alone["baseline"]
    base = ("the app before continuous batching (commit %s)" % BASELINE_COMMIT if not args.smoke
            else "this app with one-row batches")
    body += (f"\n\nThrough gradio_client, {tokens} new tokens each (sampled, seeded), {model}, automatic precision; "
             f"medians of {repeats} rounds, the servers taking turns. Baseline: {base}.\n\n"
             f"Ratio, {people} people: the slowest finishes at {slowest:.2f}x one alone (baseline "
             f"{median('baseline', people, lambda r: r['wall']) / alone['baseline']:.2f}x; target <= 2.5x: "
             f"{'met' if slowest <= 2.5 else 'NOT met'}); median first token {first:.2f} s (target <= 1 s: "
             f"{'met' if first <= 1 else 'NOT met'}); one alone takes {alone_ratio:.2f}x the baseline's time "
             f"(target <= 1.05: {'met' if alone_ratio <= 1.05 else 'NOT met'}).")
    record("Many people at once: continuous batching", body, args.smoke)


if __name__ == "__main__":
    main()
