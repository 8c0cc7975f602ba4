"""Can the packaged all-MiniLM-L6-v2 become a fill-mask model offline? Its masked-LM head starts
untrained; this fine-tunes it as a masked LM on the English prose of the installed packages'
descriptions and compares its predictions before and after, on sentences it never saw.

    .venv/bin/python bench/fill_mask_minilm.py [--epochs 10] [--learning-rate 1e-3] [--smoke]

What the Fine-tune tab says about MiniLM comes from this run (data/measurements.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, record, table

PROBES = ["The food was [MASK].", "I [MASK] this film.", "You can install the package with [MASK].",
          "This library is written in [MASK].", "Please see the [MASK] for details."]


def prose(limit_bytes: int) -> str:
    """English sentences from the installed packages' descriptions (no network needed)."""
    lines: list[str] = []
    for metadata in sorted(Path(sys.prefix).glob("lib/python*/site-packages/*.dist-info/METADATA")):
        for line in metadata.read_text(encoding="utf-8", errors="ignore").splitlines():
            if len(line) > 60 and line[0].isupper() and ": " not in line[:30]:
                lines.append(line)
    text = "\n".join(dict.fromkeys(lines))
    return text[:limit_bytes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--smoke", action="store_true", help="a small text, one epoch, RESULTS.md untouched")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from core import inference
    from core.models import ModelRegistry
    from core.training import TrainConfig, train

    folder = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    text = prose(20_000 if args.smoke else 150_000)
    (folder / "prose.txt").write_text(text, encoding="utf-8")
    started = time.perf_counter()
    result = train(TrainConfig(task="masked-lm", base_model="packaged:all-MiniLM-L6-v2",
                               train_file=str(folder / "prose.txt"), epochs=1 if args.smoke else args.epochs,
                               learning_rate=args.learning_rate, batch_size=16, max_length=128,
                               output_dir=str(folder / "models" / "minilm-mlm")))
    seconds = time.perf_counter() - started
    registry = ModelRegistry(folder / "models")
    rows, top_words = [], set()
    for probe in PROBES:
        predictions = inference.fill_mask(registry, "minilm-mlm", probe, 3)[0]
        top_words.add(predictions[0].token)
        rows.append([probe, ", ".join(f"{p.token} ({p.score:.2f})" for p in predictions)])
    body = table(["sentence", "top 3 after fine-tuning"], rows)
    before, after = result.metrics_before["perplexity"], result.metrics_after["perplexity"]
    body += (f"\n\n{len(text) / 1000:.0f} KB of text, {result.steps_done} steps in {seconds:.0f} s "
             f"(lr {args.learning_rate:g}). Validation perplexity {before:.0f} before -> {after:.0f} after "
             f"(ratio {before / after:.0f}x), yet {len(top_words)} distinct top word(s) over {len(PROBES)} "
             f"different sentences: the head learned word frequencies, not the sentence.")
    record("MiniLM as a masked LM: predictions after fine-tuning offline", body, args.smoke)
    if not args.smoke:  # the Fine-tune tab quotes these (core/measurements.py)
        from core import measurements

        measurements.save("minilm_mlm", {"kilobytes": round(len(text) / 1000), "epochs": args.epochs,
                                         "steps": result.steps_done, "distinct_top_words": len(top_words),
                                         "sentences": len(PROBES), "measured": time.strftime("%Y-%m-%d"),
                                         "bench": "bench/fill_mask_minilm.py"})


if __name__ == "__main__":
    main()
