"""Inference: our core wrappers against the raw transformers calls they wrap, on the same inputs.

- classify overhead: core.inference.classify vs pipeline(text) (target <= 3 % slower)
- scoring 1,000 rows: core.inference.classify_batch vs a per-row pipeline loop (target >= 3x)
- generation overhead: core.inference.generate_stream (all tokens) vs model.generate (<= 3 %)
- time to first streamed token vs one prefill + one token with model.generate (<= 1.5x)
- model load: cold (first use) vs cached (second use)

Real models: the packaged SmolLM2 for generation and an all-MiniLM-L6-v2 encoder with a
classification head for scoring (the head's weights do not change the timing).

    .venv/bin/python bench/infer.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

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
    registry = ModelRegistry(folder)
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
    body += (f"\n\nModels: {classifier} (scoring), {generator} (generation); medians of {repeats} runs; all model "
             f"work on the model thread, as in the app. Ratios: ours / baseline for overheads, "
             f"baseline / ours for speedups.")
    record("Inference: wrappers vs raw calls", body, args.smoke)


if __name__ == "__main__":
    main()
