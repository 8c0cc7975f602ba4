"""Inference: our core wrappers against the raw transformers calls they wrap, on the same inputs.

- classify overhead: core.inference.classify vs pipeline(text) (target <= 3 % slower)
- scoring 1,000 rows: core.inference.classify_batch vs a per-row pipeline loop (target >= 3x)
- generation overhead: core.inference.generate_stream (all tokens) vs model.generate (<= 3 %)
- time to first streamed token vs one prefill + one token with model.generate (<= 1.5x)
- model load: cold (first use) vs cached (second use)

Then batching and precision (issue: inference as fast as this hardware allows), each with its
time to first token:
- tokens/s of one sequence: float32 vs the automatic precision (bf16 where the CPU has AMX or
  AVX512-BF16)
- 3 sequences of 64 tokens: one after another vs one batch (target: the batch <= 1.5x one sequence)
- the compare pair (two prompts, one model): one after the other vs one batch
- a few-shot prompt with 3 sequences: the prompt read in every row (as `generate` does with
  num_return_sequences) vs read once
- classification rows/s: float32 vs automatic
- the cost in quality: greedy SmolLM2 on a fixed prompt set, float32 vs automatic, and the
  starter model's accuracy on its data in both

Real models: the packaged SmolLM2 for generation and an all-MiniLM-L6-v2 encoder with a
classification head for scoring (the head's weights do not change the timing).

    .venv/bin/python bench/infer.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, median_seconds, paired_medians, parse_args, record, table

# SmolLM2 writes 48 tokens on this prompt before it stops, so greedy runs make the full length.
GENERATION_PROMPT = "The history of the city begins in"
SENTENCES = [line.split(",")[0].strip('"') for line in
             (ROOT / "data" / "starter_sentiment.csv").read_text(encoding="utf-8").splitlines()[1:]]


def prepare_models(smoke: bool) -> tuple[Path, str, str]:
    """A models folder with a classifier, and the (classifier, generator) names to use."""
    folder = Path(tempfile.mkdtemp(prefix="workbench-bench-models-"))
    if smoke:
        import sys

        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import build_all

        build_all(folder)
        return folder, "tiny-bert-sentiment", "tiny-gpt2"
    import transformers

    from core.packaged import model_folder

    encoder = model_folder("packaged:all-MiniLM-L6-v2")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2})
    model.save_pretrained(folder / "minilm-classifier")
    transformers.AutoTokenizer.from_pretrained(encoder).save_pretrained(folder / "minilm-classifier")
    return folder, "minilm-classifier", "packaged:SmolLM2-135M-Instruct"


def greedy_generation(registry, generator: str, tokens: int):
    """The same greedy decoding of GENERATION_PROMPT two ways, so both stop at the same token:
    (raw(n): model.generate of up to n tokens, returning how many it made; ours(): read
    core.inference.generate_stream to the end; the settings `ours` streams with)."""
    import torch

    from core import inference
    from core.models import TEXT_GENERATION

    gen = registry.get(TEXT_GENERATION, generator)
    encoded = gen.tokenizer(GENERATION_PROMPT, return_tensors="pt")
    settings = inference.GenerationSettings(max_new_tokens=tokens, temperature=0, repetition_penalty=1.0,
                                            top_k=0, top_p=1.0)

    def raw(new_tokens: int = tokens) -> int:
        with torch.no_grad():
            output = gen.model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False,
                                        pad_token_id=gen.tokenizer.eos_token_id)
        return output.shape[1] - encoded["input_ids"].shape[1]

    def ours() -> None:
        for _ in inference.generate_stream(registry, generator, GENERATION_PROMPT, settings):
            pass

    return raw, ours, settings


def main() -> None:
    args, repeats = parse_args(5, __doc__)
    # No compile in the background while other figures are measured: the memory-bound section
    # measures the compiled step on its own.
    os.environ["WORKBENCH_COMPILE"] = "0"

    from core import inference
    from core.models import TEXT_CLASSIFICATION, ModelRegistry
    from core.threads import MODEL_THREAD, run_in_own_thread

    # Ours are called from this thread, as the app calls them from its request threads, and hand
    # their model work to the model thread. The raw baselines run on the model thread as well:
    # torch work on this thread would give the process a second OpenMP pool and slow both
    # (core/threads.py says why; bench/threads.py measures it).
    def on_model_thread(run):
        return lambda: MODEL_THREAD.run_model_work(run)

    def timed(run, times: int) -> float:
        return median_seconds(run, times)[0]

    folder, classifier, generator = run_in_own_thread(lambda: prepare_models(args.smoke))
    registry = ModelRegistry(folder)  # the starter job saves into its folder
    rows = []

    cold = timed(lambda: registry.get(TEXT_CLASSIFICATION, classifier), 1)
    cached = timed(lambda: registry.get(TEXT_CLASSIFICATION, classifier), max(repeats, 3))
    rows.append(["model load: cold vs cached", "cold load", cold, "cached", cached, cold / cached, "(info)"])

    pipe = registry.get(TEXT_CLASSIFICATION, classifier)
    texts = SENTENCES[:20 if args.smoke else 100]
    raw, ours = paired_medians(on_model_thread(lambda: [pipe(t, top_k=None, truncation=True) for t in texts]),
                               lambda: [inference.classify(registry, classifier, t) for t in texts], repeats)
    rows.append([f"classify {len(texts)} texts one by one", "pipeline()", raw, "core.inference.classify", ours,
                 ours / raw, "<= 1.03"])

    thousand = (SENTENCES * 4)[:100 if args.smoke else 1000]
    ours = timed(lambda: inference.classify_batch(registry, classifier, thousand), repeats)
    loop = timed(on_model_thread(lambda: [pipe(t, truncation=True) for t in thousand]), max(1, repeats // 2))
    rows.append([f"score {len(thousand)} rows", "per-row loop", loop, "classify_batch", ours, loop / ours, ">= 3"])

    raw_generate, ours_generate, settings = greedy_generation(registry, generator, 8 if args.smoke else 48)
    new_tokens = MODEL_THREAD.run_model_work(raw_generate)
    ours_generate()  # warm up
    raw, ours = paired_medians(on_model_thread(raw_generate), ours_generate, repeats)
    rows.append([f"generate {new_tokens} tokens (greedy)", "model.generate", raw,
                 "generate_stream", ours, ours / raw, "<= 1.03"])

    def first_token() -> float:
        started = time.perf_counter()
        stream = inference.generate_stream(registry, generator, GENERATION_PROMPT, settings)
        next(stream)
        elapsed = time.perf_counter() - started
        stream.close()
        time.sleep(0.3)  # untimed: let the stopped generation finish its last token first
        return elapsed

    ttfts, ones = [], []
    for _ in range(repeats):  # in turns, as paired_medians does
        ones.append(timed(on_model_thread(lambda: raw_generate(1)), 1))
        ttfts.append(first_token())
    one, ttft = statistics.median(ones), statistics.median(ttfts)
    rows.append(["time to first streamed token", "prefill + 1 token", one, "generate_stream", ttft, ttft / one,
                 "<= 1.5"])

    body = table(["what", "baseline", "baseline s", "ours", "ours s", "ratio", "target"], rows)
    body += (f"\n\nModels: {classifier} (scoring), {generator} (generation), in the automatic precision; "
             f"medians of {repeats} runs; all model work on the model thread, as in the app. Ratios: ours / "
             f"baseline for overheads, baseline / ours for speedups.")
    record("Inference: wrappers vs raw calls", body, args.smoke)
    batching_and_precision(registry, folder, classifier, generator, repeats, args.smoke)
    against_the_bound(registry, generator, repeats, args.smoke)


QUALITY_PROMPTS = [
    "The history of the city begins in",
    "The capital of France is",
    "Once upon a time, a small robot",
    "The best way to learn a language is",
    "Water boils at",
    "The three primary colours are",
    "My favourite season is autumn because",
    "In the morning, the baker",
]


def streamed(call) -> tuple[float, float, int]:
    """(seconds to the end, seconds to the first update, generation steps) of one generate_streams
    call; `call(should_stop)` starts it. The steps are counted where generation asks whether to
    stop: once per token of the batch."""
    steps = [0]

    def count() -> bool:
        steps[0] += 1
        return False

    started = time.perf_counter()
    first = None
    for _ in call(count):
        if first is None:
            first = time.perf_counter() - started
    return time.perf_counter() - started, first or 0.0, steps[0]


def batching_and_precision(registry, folder: Path, classifier: str, generator: str, repeats: int,
                           smoke: bool) -> None:
    from core import inference
    from core.inference import GenerationSettings
    from core.models import TEXT_CLASSIFICATION, TEXT_GENERATION
    from core.threads import MODEL_THREAD
    from demos.generate import BIAS_PROBE, FEW_SHOT_SENTIMENT

    tokens = 8 if smoke else 64
    sampled = GenerationSettings(max_new_tokens=tokens, temperature=0.8, seed=0)
    story = "Once upon a time, in a small village by the sea,"

    def run(prompts, settings, precision="auto", each_alone=False):
        """One batch of `prompts` x settings.num_sequences, or (each_alone) every prompt and
        sequence on its own, one after another, as before batching."""
        def call(should_stop):
            if not each_alone:
                return inference.generate_streams(registry, generator, prompts, settings, should_stop, precision)
            return _one_after_another(inference, registry, generator, prompts, settings, should_stop, precision)
        return call

    def timed_pair(baseline, ours):
        """Medians of (total, first update, steps), timed in turns."""
        pairs = [(streamed(baseline), streamed(ours)) for _ in range(repeats)]
        pick = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
        return [pick([b for b, _ in pairs], i) for i in range(3)], [pick([o for _, o in pairs], i) for i in range(3)]

    rows = []
    for precision in ("fp32", "auto"):  # load both copies, untimed, and warm them up
        streamed(run([story], GenerationSettings(max_new_tokens=4), precision))
    note = registry.precision_note(TEXT_GENERATION, generator)
    (f32, f32_first, f32_steps), (auto, auto_first, auto_steps) = timed_pair(
        run([story], sampled, "fp32"), run([story], sampled, "auto"))
    rows.append([f"1 sequence of {tokens} tokens: tokens/s", "float32", f"{f32_steps / f32:.1f} tok/s",
                 f"automatic ({note})", f"{auto_steps / auto:.1f} tok/s", (auto_steps / auto) / (f32_steps / f32),
                 f"first token {f32_first:.3f} s vs {auto_first:.3f} s"])

    three = GenerationSettings(max_new_tokens=tokens, temperature=0.8, seed=0, num_sequences=3)
    (apart, apart_first, _), (batch, batch_first, _) = timed_pair(run([story], three, each_alone=True),
                                                                  run([story], three))
    rows.append(["3 sequences vs 1 (automatic precision)", "one after another", apart, "one batch", batch,
                 batch / auto, f"batch / one sequence <= 1.5 (first token {apart_first:.3f} s vs "
                               f"{batch_first:.3f} s)"])
    rows.append(["3 sequences: batch vs one after another", "one after another", apart, "one batch", batch,
                 apart / batch, "(speedup)"])

    pair = list(BIAS_PROBE)
    (apart, apart_first, _), (batch, batch_first, _) = timed_pair(run(pair, sampled, each_alone=True),
                                                                  run(pair, sampled))
    rows.append(["compare pair (two prompts, one model)", "one after the other", apart, "one batch", batch,
                 apart / batch, f"(speedup; first token {apart_first:.3f} s vs {batch_first:.3f} s)"])

    few_shot_three = GenerationSettings(max_new_tokens=1, temperature=0.8, seed=0, num_sequences=3)
    gen = registry.get(TEXT_GENERATION, generator)
    context = getattr(gen.model.config, "max_position_embeddings", None) or gen.model.config.n_positions
    # Cut as ours cuts it (the tiny --smoke model has a short context).
    encoded = {key: value[:, -(context - 1):] for key, value in
               gen.tokenizer(FEW_SHOT_SENTIMENT, return_tensors="pt").items()}

    def every_row_reads_the_prompt():
        import torch

        with torch.no_grad():
            gen.model.generate(**encoded, max_new_tokens=1, do_sample=True, num_return_sequences=3,
                               pad_token_id=gen.tokenizer.eos_token_id)

    first_raw, first_ours = paired_medians(lambda: MODEL_THREAD.run_model_work(every_row_reads_the_prompt),
                                           lambda: streamed(run([FEW_SHOT_SENTIMENT], few_shot_three)), repeats)
    rows.append([f"few-shot prompt ({encoded['input_ids'].shape[1]} tokens) x 3 sequences: first token",
                 "generate, prompt in every row", first_raw, "ours, prompt read once", first_ours,
                 first_raw / first_ours, "(speedup)"])

    texts = (SENTENCES * 4)[:100 if smoke else 1000]
    inference.classify_batch(registry, classifier, texts[:10], "fp32")  # load the float32 copy
    f32, auto = paired_medians(lambda: inference.classify_batch(registry, classifier, texts, "fp32"),
                               lambda: inference.classify_batch(registry, classifier, texts), repeats)
    one_f32, one_auto = paired_medians(lambda: inference.classify(registry, classifier, texts[0], "fp32"),
                                       lambda: inference.classify(registry, classifier, texts[0]), repeats)
    rows.append([f"score {len(texts)} rows: rows/s", "float32", f"{len(texts) / f32:.0f} rows/s",
                 f"automatic ({registry.precision_note(TEXT_CLASSIFICATION, classifier)})",
                 f"{len(texts) / auto:.0f} rows/s", f32 / auto,
                 f"one text (first result): {one_f32 * 1000:.1f} ms vs {one_auto * 1000:.1f} ms"])

    body = table(["what", "baseline", "baseline", "ours", "ours", "ratio", "target / notes"], rows)
    body += (f"\n\n{generator}, sampled at temperature 0.8 with seed 0 from \"{story}\" (the pair: "
             f"the bias probe's two prompts); medians of {repeats} runs, timed in turns. Ratios: speedups "
             f"as baseline / ours, except \"3 sequences vs 1\" (batch time / one sequence's time in the "
             f"automatic precision).")
    body += "\n\n" + quality(registry, folder, generator, smoke)
    record("Inference: batching and precision", body, smoke)


def _one_after_another(inference, registry, generator, prompts, settings, should_stop, precision):
    """What generation did before batching: each prompt's sequences one at a time (sequence i
    with seed + i), as one stream of updates."""
    from dataclasses import replace

    for prompt in prompts:
        for index in range(settings.num_sequences):
            one = replace(settings, num_sequences=1, seed=settings.seed + index)
            yield from inference.generate_streams(registry, generator, [prompt], one, should_stop, precision)


def quality(registry, folder: Path, generator: str, smoke: bool) -> str:
    """Greedy outputs in float32 and in the automatic precision, and the starter model's accuracy
    in both."""
    from core import inference
    from core.inference import GenerationSettings

    greedy = GenerationSettings(max_new_tokens=8 if smoke else 32, temperature=0, repetition_penalty=1.0,
                                top_k=0, top_p=1.0)
    prompts = QUALITY_PROMPTS[:2] if smoke else QUALITY_PROMPTS
    same, lines = 0, []
    for prompt in prompts:
        (*_, f32), (*_, auto) = (inference.generate_stream(registry, generator, prompt, greedy, precision=p)
                                 for p in ("fp32", "auto"))
        f32, auto = f32[0][len(prompt):], auto[0][len(prompt):]
        if f32 == auto:
            same += 1
            continue
        common = len(os.path.commonprefix([f32, auto]))
        lines.append(f"- \"{prompt}\": the same for {common} characters, then float32 \"{f32[common:common + 40]}\" "
                     f"vs automatic \"{auto[common:common + 40]}\"")
    text = [f"**Quality.** Greedy continuations ({greedy.max_new_tokens} tokens) of {len(prompts)} fixed prompts: "
            f"{same} of {len(prompts)} the same in float32 and in the automatic precision."] + lines
    text.append(starter_accuracy(registry, folder, smoke))
    return "\n".join(text)


def starter_accuracy(registry, folder: Path, smoke: bool) -> str:
    """Train the starter model (as its button does) and score its 300 sentences in both precisions."""
    import csv
    import dataclasses

    from core import inference
    from core.jobs import FINISHED, JobRunner
    from core.starter import STARTER_NAME, starter_config

    config = dataclasses.replace(starter_config(), models_dir=str(folder))
    if smoke:
        config = dataclasses.replace(config, base_model="tiny-bert-sentiment", epochs=1)
    runner = JobRunner(folder)
    runner.start(config, STARTER_NAME)
    job = runner.wait()
    if job.state != FINISHED:
        raise SystemExit(job.message)
    with (ROOT / "data" / "starter_sentiment.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts, gold = [row["text"] for row in rows], [row["label"] for row in rows]
    accuracy, labels = {}, {}
    for precision in ("fp32", "auto"):
        labels[precision] = [row.label for row in inference.classify_batch(registry, STARTER_NAME, texts, precision)]
        accuracy[precision] = sum(p == g for p, g in zip(labels[precision], gold)) / len(gold)
    agree = sum(a == b for a, b in zip(labels["fp32"], labels["auto"]))
    return (f"\nStarter model on its {len(texts)} sentences: accuracy {accuracy['fp32']:.1%} in float32, "
            f"{accuracy['auto']:.1%} in the automatic precision "
            f"({registry.precision_note('text-classification', STARTER_NAME)}); the two agree on {agree} of "
            f"{len(texts)} labels (target: within 1 point).")


def read_bandwidth(smoke: bool) -> float:
    """Bytes a second this process reads from memory with the current thread count: the sum of a
    float32 tensor far larger than the caches (256 MiB), median of 7."""
    import torch

    values = torch.ones((4 if smoke else 256) * 2**20 // 4)
    values.sum()
    seconds, _ = median_seconds(values.sum, 7)
    return values.numel() * values.element_size() / seconds


def weights_read_per_step(model) -> int:
    """Bytes of weights one decoding step reads: every parameter once (a tied output layer reads
    the embedding table; an untied embedding table is only looked up, a few rows)."""
    unique = {p.data_ptr(): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in unique.values())
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != embedding.weight.data_ptr():
        total -= embedding.weight.numel() * embedding.weight.element_size()
    return total


def decoding_speed(model, tokenizer, rows: int, tokens: int) -> tuple[float, float]:
    """(seconds to the first token, decoding steps a second) of greedy `rows` x `tokens` through
    the app's decoding batch (core/decoding.py), with no end token so every run makes them all."""
    from core.decoding import DecodingBatch, DecodingRequest

    prompt = tokenizer(GENERATION_PROMPT)["input_ids"]
    batch = DecodingBatch(model, tokenizer, end_ids=set())
    started = time.perf_counter()
    batch.add(DecodingRequest(prompts=[prompt], sequences=rows, max_new_tokens=tokens, temperature=0, top_k=0,
                              top_p=1.0, repetition_penalty=1.0, seeds=[0] * rows))
    first = time.perf_counter() - started
    while not batch.idle:
        batch.step()
    return first, (tokens - 1) / (time.perf_counter() - started - first)


def against_the_bound(registry, generator: str, repeats: int, smoke: bool) -> None:
    """Generation as a fraction of what memory bandwidth allows: each decoding step reads every
    weight once, so steps/s can be at most (read bandwidth) / (bytes of weights). Measured with
    1 thread and with the process's default, for 1 and 8 sequences; bf16 today (plain weights)
    against bf16 with packed weights (core/packed_weights.py), in turns."""
    import copy

    import torch

    from core.compiled_step import wait_until_compiled
    from core.models import TEXT_GENERATION
    from core.packed_weights import PACKED_ATTRIBUTE
    from core.threads import MODEL_THREAD

    tokens = 8 if smoke else 64
    float32 = registry.get(TEXT_GENERATION, generator, "fp32")
    tokenizer = float32.tokenizer
    packed = registry.get(TEXT_GENERATION, generator, "bf16").model
    plain = MODEL_THREAD.run_model_work(lambda: copy.deepcopy(float32.model).to(torch.bfloat16))
    packed_layers = sum(hasattr(module, PACKED_ATTRIBUTE) for module in packed.modules())
    default_threads = MODEL_THREAD.run_model_work(torch.get_num_threads)
    rows_out = []
    for threads in sorted({1, default_threads}):
        MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(threads))
        bandwidth = MODEL_THREAD.run_model_work(lambda: read_bandwidth(smoke))
        for precision, today, ours, target in (("float32", float32.model, None, 0.60), ("bf16", plain, packed, 0.50)):
            bound = bandwidth / weights_read_per_step(today)
            for rows in (1, 8):
                def speed(model, compiled: bool = False):
                    # One row in bf16 decodes through the compiled step once it is ready
                    # (core/compiled_step.py); measured apart from the eager packed path.
                    os.environ["WORKBENCH_COMPILE"] = "1" if compiled else "0"
                    try:
                        return MODEL_THREAD.run_model_work(lambda: decoding_speed(model, tokenizer, rows, tokens))
                    finally:
                        os.environ["WORKBENCH_COMPILE"] = "0"

                compiles = ours is not None and rows == 1
                speed(today)  # warm up
                if compiles:  # the first ask starts the compile for this thread count; then it serves
                    speed(ours, compiled=True)
                    wait_until_compiled(ours, timeout=900)
                runs = [(speed(today), speed(ours) if ours is not None else None,
                         speed(ours, compiled=True) if compiles else None) for _ in range(repeats)]
                first_today = statistics.median(t[0] for t, _, _ in runs)
                today_rate = statistics.median(t[1] for t, _, _ in runs)
                row = [threads, precision, rows, f"{bandwidth / 1e9:.1f} GB/s", f"{bound:.1f}",
                       f"{today_rate:.1f} ({today_rate / bound:.0%})"]
                if ours is None:
                    row += ["(same)", "", f"first token {first_today:.3f} s", f">= {target:.0%}"]
                else:
                    first_ours = statistics.median(o[0] for _, o, _ in runs)
                    ours_rate = statistics.median(o[1] for _, o, _ in runs)
                    best = ours_rate
                    row.append(f"{ours_rate:.1f} ({ours_rate / bound:.0%})")
                    if compiles:
                        best = statistics.median(c[1] for _, _, c in runs)
                        row.append(f"{best:.1f} ({best / bound:.0%})")
                    else:
                        row.append("")
                    row += [f"{best / today_rate:.2f}x; first token {first_today:.3f} s vs {first_ours:.3f} s",
                            f">= {target:.0%}"]
                rows_out.append(row)
    MODEL_THREAD.run_model_work(lambda: torch.set_num_threads(default_threads))
    body = table(["threads", "precision", "sequences", "read bandwidth", "bound (steps/s)", "today: steps/s",
                  "packed weights: steps/s", "compiled step: steps/s", "ratio (best / today); first token",
                  "target"], rows_out)
    body += (f"\n\n{generator}, greedy, {tokens} tokens per sequence with no end token, through the app's "
             f"decoding batch; medians of {repeats} runs, today and packed timed in turns. Bound: read "
             f"bandwidth (sum of a 256 MiB float32 tensor, median of 7) / bytes of weights one step reads. "
             f"A step writes one token for each sequence. {packed_layers} linear layers packed in bf16; "
             f"float32 is left as it is (see core/packed_weights.py). The compiled step "
             f"(core/compiled_step.py) serves one row in bf16, compiled for each thread count before it is "
             f"measured.")
    record("Inference: generation against the memory bound", body, smoke)


if __name__ == "__main__":
    main()
