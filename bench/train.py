"""Fine-tuning speed, three ways on the same model, data, epochs and hyperparameters:

- ours: core.training.train (dynamic padding, length-grouped batches, fused AdamW, one
  Accelerate loop, automatic precision: bf16 autocast on CPUs with AMX or AVX512-BF16 for models of 5M weights
  or more), with its defaults; with the precision the defaults did not pick, forced (to show the
  choice was the faster one); and with its other CPU lever, frozen word embeddings
- transformers.Trainer with DataCollatorWithPadding (dynamic padding, random batches)
- the tutorial recipe: tokenise with padding="max_length", then Trainer

Printed: training samples/s (training steps only, no evaluation) and validation accuracy after
training, for a tiny BERT and for all-MiniLM-L6-v2 on data/starter_sentiment.csv.
Targets: ours >= 1.3x Trainer and >= 2x the max-length recipe, with no loss of accuracy.

    .venv/bin/python bench/train.py [--smoke]
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

from common import parse_args, ROOT, record, table

DATA = ROOT / "data" / "starter_sentiment.csv"
EPOCHS, BATCH, LR, MAX_LENGTH, SEED = 3, 16, 1e-4, 128, 42
TINY_ROUNDS, MINILM_ROUNDS = 5, 3


def ours(base: str, models_dir: str, epochs: float, **levers) -> tuple[float, float, str]:
    from core.training import TrainConfig, train

    steps = []
    config = TrainConfig(task="classification", base_model=base, models_dir=models_dir, train_file=str(DATA),
                         epochs=epochs, learning_rate=LR, batch_size=BATCH, max_length=MAX_LENGTH, seed=SEED,
                         validation_share=0.2, **levers)
    result = train(config, on_progress=lambda p: steps.append((time.perf_counter(), p))
                   if p.phase == "training" else None)
    return steps[-1][1].samples_per_second, result.metrics_after["accuracy"], result.precision


def trainer_way(base_source: str, epochs: float, max_length_padding: bool) -> tuple[float, float]:
    import numpy as np
    import transformers

    from core.data import load_training_data

    data = load_training_data("classification", str(DATA), validation_share=0.2, seed=SEED)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_source)
    padding = "max_length" if max_length_padding else False

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH, padding=padding)

    train_set = data.train.map(encode, batched=True)
    validation_set = data.validation.map(encode, batched=True)
    names = data.label_names
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base_source, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
    arguments = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=epochs, learning_rate=LR,
        per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH, warmup_steps=0.1,
        weight_decay=0.01, seed=SEED, report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=train_set,
                                   data_collator=transformers.DataCollatorWithPadding(tokenizer))
    metrics = trainer.train().metrics
    logits = trainer.predict(validation_set).predictions
    accuracy = float((np.argmax(logits, axis=-1) == np.array(validation_set["label"])).mean())
    return metrics["train_samples_per_second"], accuracy


def bare_steps(base_source: str, epochs: float, bf16: bool) -> tuple[float, float]:
    """The ceiling for any loop: only the model's forward, backward and fused AdamW step (train
    mode, so with dropout), on batches padded beforehand in length order; nothing else is timed.
    No accuracy: this way does not evaluate."""
    import torch
    import transformers

    from core.data import load_training_data

    data = load_training_data("classification", str(DATA), validation_share=0.2, seed=SEED)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_source)
    texts = sorted(data.train["text"], key=len)
    batches = []
    for start in range(0, len(texts), BATCH):
        batch = tokenizer(texts[start:start + BATCH], truncation=True, max_length=MAX_LENGTH, padding=True,
                          return_tensors="pt")
        batch["labels"] = torch.zeros(len(batch["input_ids"]), dtype=torch.long)
        batches.append(batch)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base_source, num_labels=len(data.label_names), ignore_mismatched_sizes=True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, fused=True)
    steps = round(epochs * len(batches))
    started = time.perf_counter()
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batches[step % len(batches)]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps * BATCH / (time.perf_counter() - started), float("nan")


def main() -> None:
    args, _ = parse_args(None, __doc__)  # one run per way: its figures are rates over whole epochs
    import sys

    from core.packaged import model_folder

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_bert_classifier

    models_dir = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    build_bert_classifier(models_dir / "tiny-bert")
    # (title, name, folder, rounds): each figure is the median of its rounds; a tiny-model run
    # lasts under a second, a MiniLM round about a minute (the max-length recipe is most of it).
    bases = [("tiny BERT (2 layers, 32 wide)", "tiny-bert", str(models_dir / "tiny-bert"), TINY_ROUNDS)]
    if not args.smoke:
        minilm = "packaged:all-MiniLM-L6-v2"
        bases.append(("all-MiniLM-L6-v2", minilm, str(model_folder(minilm)), MINILM_ROUNDS))
    epochs = 0.3 if args.smoke else EPOCHS
    rows = []
    for title, name, source, rounds in bases:
        # Warm up first (kernels, allocator): otherwise whichever way runs first looks slower.
        trainer_way(source, 0.2, max_length_padding=False)
        *_, automatic = ours(name, str(models_dir), 0.2)  # also tells which precision the defaults pick
        other = "fp32" if automatic == "bf16" else "bf16"
        ways = [
            ("Trainer (dynamic padding)", lambda: trainer_way(source, epochs, False)),
            ("recipe: padding=max_length + Trainer", lambda: trainer_way(source, epochs, True)),
            (f"ours (defaults: {automatic})", lambda: ours(name, str(models_dir), epochs)),
            (f"ours, {other} forced", lambda: ours(name, str(models_dir), epochs, precision=other)),
            ("ours (defaults) + frozen embeddings",
             lambda: ours(name, str(models_dir), epochs, freeze_embeddings=True)),
            (f"bound: bare model steps ({automatic}), no loop", lambda: bare_steps(source, epochs, automatic == "bf16")),
        ]
        # The ways take turns, round after round, so drift in the machine's speed falls on all.
        runs = {way: [] for way, _ in ways}
        for _ in range(1 if args.smoke else rounds):
            for way, run in ways:
                runs[way].append(run()[:2])
        speed = {way: statistics.median(s for s, _ in results) for way, results in runs.items()}
        accuracy = {way: statistics.median(a for _, a in results) for way, results in runs.items()}
        trainer, recipe = (way for way, _ in ways[:2])
        for way, _ in ways:
            rows.append([title, way, speed[way],
                         "1 (baseline)" if way == trainer else f"{speed[way] / speed[trainer]:.2f}",
                         "1" if way == recipe else ("" if way == trainer else f"{speed[way] / speed[recipe]:.2f}"),
                         "" if math.isnan(accuracy[way]) else accuracy[way], ", ".join(f"{s:.0f}" for s, _ in runs[way])])
    body = table(["model", "way", "train samples/s", "x Trainer", "x recipe", "validation accuracy",
                  "each round (samples/s)"], rows)
    body += (f"\n\nSame data ({DATA.name}, 80/20 stratified split), {epochs} epochs, batch {BATCH}, lr {LR}, "
             f"max length {MAX_LENGTH}, seed {SEED}. Medians of {TINY_ROUNDS} rounds (tiny BERT) and {MINILM_ROUNDS} "
             f"(MiniLM), the ways taking turns in each round. The bound times only the model's own steps "
             f"(forward, backward, AdamW) on batches made beforehand: no loop can beat it. "
             f"Targets: ours >= 1.3x Trainer, >= 2x the recipe.")
    record("Training: ours vs Trainer vs the max-length recipe", body, args.smoke)


if __name__ == "__main__":
    main()
