"""Fine-tuning speed, three ways on the same model, data, epochs and hyperparameters:

- ours: core.training.train (dynamic padding, length-grouped batches, fused AdamW, one
  Accelerate loop), with its defaults, then with the CPU levers it offers: bf16 autocast (on CPUs
  with bf16 support) and frozen word embeddings
- transformers.Trainer with DataCollatorWithPadding (dynamic padding, random batches)
- the tutorial recipe: tokenise with padding="max_length", then Trainer

Printed: training samples/s (training steps only, no evaluation) and validation accuracy after
training, for a tiny BERT and for all-MiniLM-L6-v2 on data/starter_sentiment.csv.
Targets: ours >= 1.3x Trainer and >= 2x the max-length recipe, with no loss of accuracy.

    .venv/bin/python bench/train.py [--smoke]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import parse_args, ROOT, record, table

DATA = ROOT / "data" / "starter_sentiment.csv"
EPOCHS, BATCH, LR, MAX_LENGTH, SEED = 3, 16, 1e-4, 128, 42


def ours(base: str, models_dir: str, epochs: float, **levers) -> tuple[float, float]:
    from core.training import TrainConfig, train

    steps = []
    config = TrainConfig(task="classification", base_model=base, models_dir=models_dir, train_file=str(DATA),
                         epochs=epochs, learning_rate=LR, batch_size=BATCH, max_length=MAX_LENGTH, seed=SEED,
                         validation_share=0.2, **levers)
    result = train(config, on_progress=lambda p: steps.append((time.perf_counter(), p))
                   if p.phase == "training" else None)
    return steps[-1][1].samples_per_second, result.metrics_after["accuracy"]


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


def main() -> None:
    args, _ = parse_args(None, __doc__)  # one run per way: its figures are rates over whole epochs
    import sys

    from core.packaged import model_folder

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_bert_classifier

    models_dir = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    build_bert_classifier(models_dir / "tiny-bert")
    bases = [("tiny BERT (2 layers, 32 wide)", "tiny-bert", str(models_dir / "tiny-bert"))]
    if not args.smoke:
        minilm = "packaged:all-MiniLM-L6-v2"
        bases.append(("all-MiniLM-L6-v2", minilm, str(model_folder(minilm))))
    epochs = 0.3 if args.smoke else EPOCHS
    rows = []
    for title, name, source in bases:
        # Warm up first (kernels, allocator): otherwise whichever way runs first looks slower.
        trainer_way(source, 0.2, max_length_padding=False)
        trainer_speed, trainer_accuracy = trainer_way(source, epochs, max_length_padding=False)
        recipe_speed, recipe_accuracy = trainer_way(source, epochs, max_length_padding=True)
        rows += [[title, "Trainer (dynamic padding)", trainer_speed, "1 (baseline)", "", trainer_accuracy],
                 [title, "recipe: padding=max_length + Trainer", recipe_speed,
                  f"{recipe_speed / trainer_speed:.2f}", "1", recipe_accuracy]]
        for way, levers in (("ours (defaults)", {}), ("ours + bf16", {"bf16": True}),
                            ("ours + bf16 + frozen embeddings", {"bf16": True, "freeze_embeddings": True})):
            speed, accuracy = ours(name, str(models_dir), epochs, **levers)
            rows.append([title, way, speed, f"{speed / trainer_speed:.2f}", f"{speed / recipe_speed:.2f}",
                         accuracy])
    body = table(["model", "way", "train samples/s", "x Trainer", "x recipe", "validation accuracy"], rows)
    body += (f"\n\nSame data ({DATA.name}, 80/20 stratified split), {epochs} epochs, batch {BATCH}, lr {LR}, "
             f"max length {MAX_LENGTH}, seed {SEED}. Targets: ours >= 1.3x Trainer, >= 2x the recipe.")
    record("Training: ours vs Trainer vs the max-length recipe", body, args.smoke)


if __name__ == "__main__":
    main()
