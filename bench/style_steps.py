"""How many optimizer steps does a small text file need before SmolLM2 writes in its style?

The Fine-tune tab's language-model defaults (3 epochs in batches of 16) gave an 11 KB license
text 3 optimizer steps: perplexity 77 -> 65, and no change of style. This fine-tunes the
packaged SmolLM2-135M-Instruct (the app's defaults otherwise: learning rate 5e-5, warmup 0.1,
blocks of 128 tokens, a fifth held out) on two ~10 KB texts for a growing number of steps
(batches of 4), and measures after each run:

- validation perplexity (held-out blocks of the same text)
- style: greedy continuations (40 tokens) of the first words of each held-out block; the share
  of their word pairs that occur in the training text (the base model's share is the baseline)
- seconds per step

The smallest step count whose perplexity is within 10% of the best measured is "enough"; it
becomes core.training's LM_TARGET_STEPS (data/measurements.json keeps the figures).

    .venv/bin/python bench/style_steps.py [--smoke]   (--smoke: one step count, on a tiny GPT-2)
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, parse_args, record, table

MODEL = "packaged:SmolLM2-135M-Instruct"
BATCH = 4
STEPS = (3, 10, 20, 40, 80)


def texts(smoke: bool) -> dict[str, str]:
    """~10 KB each: the Apache License 2.0 (from an installed package's metadata) and the
    starter data's short review sentences (one per line)."""
    licenses = sorted(Path(sys.prefix).glob("lib/python*/site-packages/*.dist-info/**/LICENSE*"))
    apache = next(path.read_text(encoding="utf-8") for path in licenses
                  if "Apache License" in path.read_text(encoding="utf-8", errors="ignore")[:200]
                  and 9_000 < path.stat().st_size < 13_000)
    reviews = "\n".join(line.rsplit(",", 1)[0].strip('"') for line in
                        (ROOT / "data" / "starter_sentiment.csv").read_text(encoding="utf-8").splitlines()[1:])
    chosen = {"Apache License 2.0": apache[:10_000], "short reviews": reviews[:10_000]}
    return {"Apache License 2.0": chosen["Apache License 2.0"][:2_500]} if smoke else chosen


def word_pairs(text: str) -> set[tuple[str, str]]:
    words = re.findall(r"[a-z']+", text.lower())
    return set(zip(words, words[1:]))


def style_share(model, tokenizer, prompts: list[str], training_pairs: set) -> float:
    """The share of word pairs of greedy continuations that occur in the training text."""
    import torch

    found = total = 0
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        written = word_pairs(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        found += len(written & training_pairs)
        total += len(written)
    return found / total if total else 0.0


def prompts_from(lines: list[str]) -> list[str]:
    """The first six words of each held-out line long enough to have them."""
    return [" ".join(line.split()[:6]) for line in lines if len(line.split()) >= 6]


def main() -> None:
    args, _ = parse_args(None, __doc__)
    import dataclasses

    import transformers

    from core import measurements
    from core.data import load_training_data
    from core.packaged import model_folder
    from core.run_plan import plan_run
    from core.training import TrainConfig, train

    folder = Path(tempfile.mkdtemp(prefix="workbench-bench-style-"))
    model, models_dir = MODEL, None
    if args.smoke:  # the whole script, on a tiny GPT-2: SmolLM2's steps take minutes here
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import build_gpt2

        model, models_dir = "tiny-gpt2", folder / "models"
        build_gpt2(models_dir / model)
    base_source = str(models_dir / model if models_dir else model_folder(MODEL))
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_source)
    steps_tried = STEPS[:1] if args.smoke else STEPS
    rows, enough = [], {}
    for name, text in texts(args.smoke).items():
        path = folder / f"{name.replace(' ', '-')}.txt"
        path.write_text(text, encoding="utf-8")
        training_pairs = word_pairs(text)
        config = TrainConfig(task="causal-lm", base_model=model, train_file=str(path), batch_size=BATCH, epochs=1,
                             seed=42, **({"models_dir": str(models_dir), "max_length": 32} if models_dir else {}))
        data = load_training_data("causal-lm", str(path), validation_share=config.validation_share, seed=42)
        plan = plan_run(config, data, tokenizer, 8192)
        prompts = prompts_from(data.validation[:]["text"])[:2 if args.smoke else 6]
        base = transformers.AutoModelForCausalLM.from_pretrained(base_source)
        measured = [(0, None, style_share(base, tokenizer, prompts, training_pairs), None)]
        for steps in steps_tried:
            seconds = []
            result = train(dataclasses.replace(config, epochs=steps / plan.steps_per_epoch),
                           on_progress=lambda update: seconds.append(time.perf_counter())
                           if update.phase == "training" else None)
            if measured[0][1] is None:
                measured[0] = (0, result.metrics_before["perplexity"], measured[0][2], None)
            per_step = (seconds[-1] - seconds[0]) / max(len(seconds) - 1, 1)
            measured.append((result.steps_done, result.metrics_after["perplexity"],
                             style_share(result.model, tokenizer, prompts, training_pairs), per_step))
        best = min(perplexity for _, perplexity, _, _ in measured)
        enough[name] = next(steps for steps, perplexity, _, _ in measured if perplexity <= 1.1 * best)
        for steps, perplexity, share, per_step in measured:
            rows.append([name, f"{plan.examples} blocks", steps, perplexity, share,
                         "" if per_step is None else per_step])
    body = table(["text", "training blocks", "steps (batches of 4)", "validation perplexity",
                  "word pairs of the training text in its writing", "seconds per step"], rows)
    body += ("\n\nEnough (perplexity within 10% of the best measured): "
             + "; ".join(f"{name}: {steps} steps" for name, steps in enough.items())
             + f". Ratio to the old default of 3 steps: {max(enough.values()) / 3:.0f}x the steps.")
    record("Fine-tuning a language model: steps a small text needs", body, args.smoke)
    if not args.smoke:
        measurements.save("lm_steps", {"enough": enough, "measured": time.strftime("%Y-%m-%d"),
                                       "bench": "bench/style_steps.py"})


if __name__ == "__main__":
    main()
