"""Classification quality on real, human-written sentences: ours vs transformers.Trainer.

The data: the VADER sentiment ground truth (Hutto & Gilbert, ICWSM 2014), shipped in the sdist
of vaderSentiment==3.3.2 on PyPI (MIT licence; additional_resources/hutto_ICWSM_2014.tar.gz; the
wheel does not carry it). Four sets of short English texts, each rated by 20 or more people from
-4 to +4: tweets (4,200), movie-review snippets from Rotten Tomatoes (10,605), Amazon product-review
snippets (3,708) and New York Times editorial snippets (5,190). A mean rating above 0.5 is
"positive", below -0.5 "negative", else "neutral" (the starter model's three classes).

One fixed split (seed 42, exact duplicates dropped first): from each set alike, 500 training,
100 validation and 250 test rows (2,000 / 400 / 1,000). All ways train all-MiniLM-L6-v2 (the
packaged copy) on the same training rows, may look at the same validation rows, and are scored
by one function (fp32, core.metrics.classification_metrics) on the same test rows:

- transformers.Trainer with its defaults (lr 5e-5, batch 8, 3 epochs, no warmup, no weight
  decay), DataCollatorWithPadding, length-grouped batches and bf16 when our run picks bf16;
  at training seeds 42, 1 and 2, and once with our number of epochs
- ours: core.training.train with TrainConfig's defaults for classification (5 epochs of 8, the
  epoch with the best validation macro-F1 kept), given the validation rows as its validation
  file, at the same three seeds; then the previous defaults (3 epochs of 16) and LoRA (its
  learning rate 1e-3)
- the starter model's recipe (core/starter.py: 300 sentences written for the project), scored
  on the same test rows; and VADER's own rules, as a reference that needs no training

Printed: test accuracy and macro-F1, and accuracy on the test rows that people rated
positive or negative (mean beyond +-0.5), choosing between those two classes only ("polar"),
plus training seconds.

    .venv/bin/python bench/quality.py [--smoke]

The sdist is downloaded once (`pip download`) into the cache (core.packaged.cache_dir()/datasets).
--smoke: 16/8/16 rows per set, one epoch, one seed, no LoRA, Trainer once; RESULTS.md untouched.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import html
import importlib.util
import io
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import parse_args, record, table

SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SOURCES = {  # name -> file in the inner archive (tab-separated: id, mean rating, text)
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "movie reviews": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "amazon reviews": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "nyt editorials": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
}
POSITIVE_ABOVE, NEGATIVE_BELOW = 0.5, -0.5  # mean rating on -4..+4
LABELS = ["negative", "neutral", "positive"]  # sorted, as core.data orders them
PER_SOURCE = {"train": 500, "validation": 100, "test": 250}
SMOKE_PER_SOURCE = {"train": 16, "validation": 8, "test": 16}
BASE = "packaged:all-MiniLM-L6-v2"
EPOCHS, SEED, SCORE_MAX_LENGTH = 3, 42, 128  # Trainer's default epochs; the split's seed
SEEDS = (42, 1, 2)  # training seeds of the runs compared over several (the split stays seed 42's)


# ----- the data -------------------------------------------------------------------------------
def sdist_file() -> Path:
    """The vaderSentiment sdist in the cache, downloaded with pip the first time."""
    from core.packaged import cache_dir

    folder = cache_dir() / "datasets"
    path = folder / SDIST_NAME
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST_REQUIREMENT,
               "-d", str(folder)]
    if not path.is_file():
        print(f"Downloading the {SDIST_REQUIREMENT} sdist (2.5 MB) into {folder} ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(command, capture_output=True, text=True)
    if not path.is_file():
        raise SystemExit(f"The data set ships in the sdist of {SDIST_REQUIREMENT} (not in its wheel, so `pip install "
                         f"{SDIST_REQUIREMENT}` is not enough). Download it with:\n    {' '.join(command)}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{path} is not the expected {SDIST_NAME} (sha256 {digest}): delete it and rerun.")
    return path


def load_rows(sdist: Path) -> list[dict]:
    """Every rated text of the four sets, read from the archives in memory (nothing extracted),
    with its label; exact duplicates (ignoring case and spacing) kept once."""
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
    rows, seen = [], set()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for source, member in SOURCES.items():
            raw = inner.extractfile(member).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            for line in text.splitlines():
                parts = line.split("\t")
                if len(parts) != 3 or not parts[2].strip():
                    continue
                sentence = " ".join(html.unescape(parts[2]).split())  # tweets keep "&amp;" etc.
                key = sentence.lower()
                if key in seen:
                    continue
                seen.add(key)
                rating = float(parts[1])
                label = ("positive" if rating > POSITIVE_ABOVE else "negative" if rating < NEGATIVE_BELOW
                         else "neutral")
                rows.append({"source": source, "rating": rating, "text": sentence, "label": label})
    return rows


def split_rows(rows: list[dict], per_source: dict) -> dict[str, list[dict]]:
    """The one fixed split: per set, shuffled with the seed, then test, validation, train."""
    splits = {name: [] for name in ("train", "validation", "test")}
    for source in SOURCES:
        chosen = [row for row in rows if row["source"] == source]
        random.Random(SEED).shuffle(chosen)
        start = 0
        for name in ("test", "validation", "train"):
            splits[name] += chosen[start:start + per_source[name]]
            start += per_source[name]
    return splits


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([row["text"], row["label"]] for row in rows)
    return path


# ----- scoring: one function for every way ----------------------------------------------------
def predict(model, tokenizer, texts: list[str]):
    """Logits in the order of LABELS (whatever order the model's head has), fp32, no dropout."""
    import torch

    model.eval()
    model.to(torch.float32)
    columns = [model.config.label2id[name] for name in LABELS]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
    logits = [None] * len(texts)
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = order[start:start + 64]
            batch = tokenizer([texts[i] for i in chunk], truncation=True, max_length=SCORE_MAX_LENGTH,
                              padding=True, return_tensors="pt")
            out = model(**batch).logits[:, columns].float()
            for i, row in zip(chunk, out):
                logits[i] = row.tolist()
    return logits


def score(logits: list[list[float]], rows: list[dict]) -> dict:
    """Accuracy and macro-F1 over the three classes; "polar": accuracy on the rows rated
    positive or negative, predicting the more likely of those two (neutral left out)."""
    from core.metrics import classification_metrics

    truth = [LABELS.index(row["label"]) for row in rows]
    predicted = [max(range(len(LABELS)), key=lambda k: row[k]) for row in logits]
    metrics = classification_metrics(truth, predicted, LABELS)
    negative, positive = LABELS.index("negative"), LABELS.index("positive")
    polar = [(t, positive if l[positive] >= l[negative] else negative) for t, l in zip(truth, logits)
             if t != LABELS.index("neutral")]
    by_source = {}
    for source in SOURCES:
        hits = [t == p for t, p, row in zip(truth, predicted, rows) if row["source"] == source]
        by_source[source] = sum(hits) / len(hits) if hits else float("nan")
    neutral_on_polar = sum(p == LABELS.index("neutral") for t, p in zip(truth, predicted) if t != LABELS.index("neutral"))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "polar_accuracy": sum(t == p for t, p in polar) / len(polar) if polar else float("nan"),
            "neutral_on_polar": neutral_on_polar / len(polar) if polar else float("nan"),
            "by_source": by_source}


# ----- the ways -------------------------------------------------------------------------------
def trainer_way(files: dict, epochs: float, bf16: bool, seed: int = 42):
    """transformers.Trainer with its defaults; dynamic padding, length-grouped batches."""
    import transformers

    from core.data import load_training_data
    from core.packaged import model_folder

    source = str(model_folder(BASE))
    data = load_training_data("classification", files["train"], files["validation"], "text", "label")
    assert data.label_names == LABELS, data.label_names
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    train_set = data.train.map(lambda b: tokenizer(b["text"], truncation=True, max_length=SCORE_MAX_LENGTH),
                               batched=True, remove_columns=["text"])
    # Seeded before the new head is drawn, as run_glue.py does (Trainer seeds only later), so that
    # a rerun trains the same model.
    transformers.set_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)})
    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    # transformers 5 names length grouping train_sampling_strategy; 4.x had group_by_length.
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
                else {"group_by_length": True})
    arguments = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="workbench-quality-"), num_train_epochs=epochs, seed=seed, bf16=bf16,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, **grouping)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=train_set,
                                   data_collator=transformers.DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    trainer.train()
    return model, tokenizer, time.perf_counter() - started, ""


def ours(files: dict, **settings):
    from core.training import TrainConfig, train

    config = TrainConfig(task="classification", base_model=BASE, train_file=files["train"],
                         validation_file=files["validation"], text_column="text", label_column="label", **settings)
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    kept = result.kept
    note = f"kept epoch {kept['epoch']:g} of {result.config.epochs:g}; {result.precision}"
    return result.model, result.tokenizer, seconds, note


def starter_way(output_dir: str, smoke: bool):
    from core.starter import starter_config
    from core.training import train

    config = dataclasses.replace(starter_config(), output_dir=output_dir, **({"epochs": 1} if smoke else {}))
    started = time.perf_counter()
    result = train(config)
    return result.model, result.tokenizer, time.perf_counter() - started, f"{config.epochs:g} epochs, lr " \
        f"{config.learning_rate:g}, trained on its 240 rows"


def vader_rules(sdist: Path, texts: list[str]):
    """VADER's own scorer (from the same sdist), compound >= 0.05 positive, <= -0.05 negative,
    else neutral (its README's thresholds), as logits-like scores for `score`."""
    folder = Path(tempfile.mkdtemp(prefix="workbench-vader-"))
    with tarfile.open(sdist) as outer:
        for name in ("vaderSentiment.py", "vader_lexicon.txt", "emoji_utf8_lexicon.txt"):
            (folder / name).write_bytes(outer.extractfile(f"vaderSentiment-3.3.2/vaderSentiment/{name}").read())
    spec = importlib.util.spec_from_file_location("vader_rules", folder / "vaderSentiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    analyzer = module.SentimentIntensityAnalyzer()
    scores = []
    for text in texts:
        compound = analyzer.polarity_scores(text)["compound"]
        neutral = 1.0 if -0.05 < compound < 0.05 else -1.0
        scores.append([-compound, neutral, compound])  # polar: the sign of compound
    return scores


# ----- the run --------------------------------------------------------------------------------
def main() -> None:
    args, _ = parse_args(None, __doc__)

    from core.packaged import model_folder
    from core.precision import Hardware, choose_precision

    sdist = sdist_file()
    rows = load_rows(sdist)
    splits = split_rows(rows, SMOKE_PER_SOURCE if args.smoke else PER_SOURCE)
    work = Path(tempfile.mkdtemp(prefix="workbench-quality-"))
    files = {name: str(write_csv(splits[name], work / f"{name}.csv")) for name in ("train", "validation")}
    test, validation = splits["test"], splits["validation"]
    epochs = 1 if args.smoke else EPOCHS

    import transformers

    probe = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_folder(BASE)), num_labels=3)
    precision, _ = choose_precision("auto", probe, Hardware.detect())
    del probe

    results = []  # (way, test score, validation score, seconds, note)
    loads = []  # the 1-minute load average after each run: other work on the machine slows the timings
    started = time.perf_counter()

    def measure(way: str, run) -> dict:
        model, tokenizer, seconds, note = run()
        test_score = score(predict(model, tokenizer, [r["text"] for r in test]), test)
        validation_score = score(predict(model, tokenizer, [r["text"] for r in validation]), validation)
        results.append((way, test_score, validation_score, seconds, note))
        loads.append(os.getloadavg()[0])
        print(f"  {way}: test accuracy {test_score['accuracy']:.3f}, macro-F1 {test_score['macro_f1']:.3f}; "
              f"validation macro-F1 {validation_score['macro_f1']:.3f}; {seconds:.0f} s", flush=True)
        del model
        gc.collect()
        return test_score["macro_f1"]

    print(f"{len(rows):,} rated texts; split {', '.join(f'{k} {len(v)}' for k, v in splits.items())}; "
          f"precision {precision}", flush=True)
    vader_test = score(vader_rules(sdist, [r["text"] for r in test]), test)
    vader_validation = score(vader_rules(sdist, [r["text"] for r in validation]), validation)
    results.append(("VADER rules (no training; reference)", vader_test, vader_validation, 0.0, "lexicon + rules"))

    from core.run_plan import DEFAULT_BATCH_SIZES, DEFAULT_EPOCHS

    our_epochs, our_batch = (1, DEFAULT_BATCH_SIZES["classification"]) if args.smoke else (
        DEFAULT_EPOCHS["classification"], DEFAULT_BATCH_SIZES["classification"])
    seeds = SEEDS[:1] if args.smoke else SEEDS
    bf16 = precision == "bf16"
    by_seed = {"Trainer": [], "ours": []}  # test macro-F1 per seed
    for seed in seeds:
        by_seed["Trainer"].append(measure(f"transformers.Trainer, its defaults ({epochs} epochs of 8), seed {seed}",
                                          lambda: trainer_way(files, epochs, bf16, seed)))
    for seed in seeds:
        by_seed["ours"].append(measure(f"ours, TrainConfig defaults ({our_epochs} epochs of {our_batch}), seed {seed}",
                                       lambda: ours(files, seed=seed, **({"epochs": 1} if args.smoke else {}))))
    # The same epochs for Trainer: is the gain only the epochs? Then our earlier defaults, and LoRA.
    # (With --smoke both take one epoch: that Trainer run would be the first one again.)
    if not args.smoke:
        measure(f"transformers.Trainer, ours' {our_epochs} epochs of 8, seed {SEED}",
                lambda: trainer_way(files, our_epochs, bf16, SEED))
        measure("ours, the previous defaults (3 epochs of 16)", lambda: ours(files, epochs=3, batch_size=16))
        measure("ours, lora=True (its lr 1e-3), defaults otherwise", lambda: ours(files, lora=True))
    measure("starter recipe (core/starter.py), 3 classes as they come",
            lambda: starter_way(str(work / "starter"), args.smoke))

    trainer, trainer_seconds = results[1][1], results[1][3]  # Trainer's defaults, the first seed
    rows_out = []
    for way, test_score, validation_score, seconds, note in results:
        rows_out.append([way, f"{test_score['accuracy']:.3f}", f"{test_score['macro_f1']:.3f}",
                         f"{test_score['macro_f1'] - trainer['macro_f1']:+.3f}",
                         f"{test_score['polar_accuracy']:.3f}", f"{validation_score['macro_f1']:.3f}",
                         f"{seconds:.0f}", f"{seconds / trainer_seconds:.2f}" if seconds else "", note])
    mean = {way: sum(values) / len(values) for way, values in by_seed.items()}
    wins = sum(o > t for o, t in zip(by_seed["ours"], by_seed["Trainer"]))
    body = (f"Over seeds {', '.join(map(str, seeds))}: test macro-F1 Trainer (its defaults) "
            f"{' / '.join(f'{v:.3f}' for v in by_seed['Trainer'])} (mean {mean['Trainer']:.3f}); ours (TrainConfig "
            f"defaults) {' / '.join(f'{v:.3f}' for v in by_seed['ours'])} (mean {mean['ours']:.3f}): ours "
            f"{mean['ours'] - mean['Trainer']:+.3f}, higher at {wins} of {len(seeds)} seeds.\n\n")
    body += table(["way", "test accuracy", "test macro-F1", f"macro-F1 minus Trainer's (seed {SEED})",
                   "test polar accuracy", "validation macro-F1", "train s", "train s x Trainer", "note"], rows_out)
    body += "\n\n" + table(["way"] + [f"accuracy: {source}" for source in SOURCES] + ["neutral said on polar rows"],
                           [[way] + [f"{t['by_source'][s]:.3f}" for s in SOURCES] + [f"{t['neutral_on_polar']:.3f}"]
                            for way, t, *_ in results])
    counts = {name: {label: sum(r["label"] == label for r in part) for label in LABELS} for name, part in splits.items()}
    n = len(test)
    body += (f"\n\nData: {SDIST_REQUIREMENT} sdist, {INNER_ARCHIVE.split('/', 1)[1]}: {len(rows):,} rated texts after "
             f"dropping duplicates; mean rating > {POSITIVE_ABOVE} positive, < {NEGATIVE_BELOW} negative, else neutral. "
             f"Split (seed {SEED}, the same for every way and training seed): "
             + "; ".join(f"{name} {len(part)} ({', '.join(f'{c} {label}' for label, c in counts[name].items())})"
                         for name, part in splits.items())
             + f". Base {BASE}, precision {precision} for Trainer and ours. "
             f"Trainer: lr 5e-5, batch 8, no warmup or weight decay, no evaluation, last epoch kept. Ours: lr 5e-5, "
             f"warmup 0.1, weight decay 0.01, the best validation macro-F1 epoch kept. Scored in fp32 by "
             f"one function (max length {SCORE_MAX_LENGTH}); polar: the test rows rated positive or negative, the "
             f"more likely of those two classes. One run: on {n} test rows a difference under about "
             f"{2 * (0.25 / n) ** 0.5:.3f} in accuracy is within noise (two standard errors at 50%); the seeds show "
             f"how far a run moves. Train s: the training call's wall time (ours includes its evaluations). Whole "
             f"bench {(time.perf_counter() - started) / 60:.0f} min; "
             f"load average after the runs up to {max(loads):.1f} on {os.cpu_count()} CPUs"
             + (" (other work was running: the times are not comparable)." if max(loads) > 1.5 * os.cpu_count()
                else "."))
    record("Quality: classification on real sentences, ours vs Trainer", body, args.smoke)


if __name__ == "__main__":
    main()
