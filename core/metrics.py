"""Evaluation metrics with Hugging Face `evaluate`, offline.

The standard metric modules (accuracy, precision, recall, F1, confusion matrix) ship with the
project in core/metric_modules and are loaded by path, so no metric needs the Hub; see that
folder's README. Perplexity is exp(mean token cross-entropy), as evaluate's own module defines it.

    classification_metrics([0, 1, 1], [0, 1, 0], ["negative", "positive"])["macro_f1"]
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from core.errors import WorkbenchError

METRIC_MODULES = Path(__file__).resolve().parent / "metric_modules"
SHIPPED_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix")

# One compute at a time: an evaluate module object keeps the inputs it is given until it computes.
_compute_lock = threading.Lock()


@functools.cache
def load_metric(name: str):
    """A shipped evaluate module by name (kept in memory: no cache files, so several training
    processes under torchrun never share one)."""
    import evaluate

    if name not in SHIPPED_METRICS:
        raise ValueError(f"no shipped metric module named {name!r} (shipped: {', '.join(SHIPPED_METRICS)})")
    return evaluate.load(str(METRIC_MODULES / name), keep_in_memory=True)


def classification_metrics(labels: list[int], predictions: list[int], label_names: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class precision/recall/F1 with support, and the
    confusion matrix (rows: the true class, columns: the predicted one), for classes 0..n-1."""
    ids = list(range(len(label_names)))
    inputs = dict(predictions=list(predictions), references=list(labels))
    with _compute_lock, warnings.catch_warnings():
        # A class never predicted has no precision: scikit-learn warns and counts it as 0, as
        # zero_division=0 says for the modules that take it (f1 does not).
        warnings.filterwarnings("ignore", message=".*(ill-defined|no true nor predicted).*")
        accuracy = load_metric("accuracy").compute(**inputs)["accuracy"]
        per_class = {measure: _as_list(load_metric(measure).compute(**inputs, labels=ids, average=None,
                                                                    **_zero_division(measure))[measure])
                     for measure in ("precision", "recall", "f1")}
        matrix = load_metric("confusion_matrix").compute(**inputs, labels=ids)["confusion_matrix"].tolist()
    support = [sum(row) for row in matrix]
    return {
        "accuracy": float(accuracy),
        "macro_f1": _mean(per_class["f1"]),
        "macro_precision": _mean(per_class["precision"]),
        "macro_recall": _mean(per_class["recall"]),
        "per_class": {
            name: {"precision": per_class["precision"][i], "recall": per_class["recall"][i],
                   "f1": per_class["f1"][i], "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": matrix,
        "labels": list(label_names),
    }


def classification_report(labels: list[int], predictions: list[int], label_names: list[str]) -> str:
    """scikit-learn's familiar text report: per class, then accuracy and the macro and
    support-weighted averages (what the evaluate modules wrap)."""
    from sklearn.metrics import classification_report as report

    text = report(labels, predictions, labels=list(range(len(label_names))), target_names=list(label_names),
                  zero_division=0, digits=3)
    # The header line starts with blanks over the class names' column: name that column, so the
    # header keeps its alignment where a viewer trims leading blanks (Gradio's Code does).
    header, rest = text.split("\n", 1)
    lead = len(header) - len(header.lstrip())
    return f"{'class':<{lead}}{header.lstrip()}\n{rest}" if lead > len("class") else text


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross-entropy), capped so a diverged model reports a huge number, not inf."""
    return float(math.exp(min(mean_loss, 50.0)))


def _zero_division(measure: str) -> dict:
    return {} if measure == "f1" else {"zero_division": 0}


def _as_list(values) -> list[float]:
    return [float(value) for value in values]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass
class LabelledEvaluation:
    """A classifier's predictions measured against the labels a file gives (its gold column)."""

    metrics: dict  # classification_metrics over `classes`
    report: str  # classification_report
    rows: int  # rows measured (a text and a gold label both present)
    skipped: int  # rows left out: no text or no gold label
    unknown_labels: dict[str, int]  # gold labels that are none of the model's classes -> their rows
    warnings: list[str]


def evaluate_labelled(gold: list[str], predicted: list[str], model_classes: list[str]) -> LabelledEvaluation:
    """Measure `predicted` (the model's labels, "" where a row was not scored) against `gold`.

    Gold labels match the model's classes with case and surrounding spaces ignored ("Positive"
    is "positive"). A gold label the model does not have stays in the measure as a class the
    model never predicts, so its rows count as wrong, and is named in the warnings; when no gold
    label matches at all, this refuses (the labels are likely coded otherwise, 0/1 against
    NEGATIVE/POSITIVE)."""
    by_key = {label.strip().lower(): label for label in model_classes}
    pairs = [(g.strip(), p) for g, p in zip(gold, predicted) if g and g.strip() and p]
    skipped = len(gold) - len(pairs)
    if not pairs:
        raise WorkbenchError("No row has both a text and a gold label to measure.")
    unknown: dict[str, int] = {}
    for label, _ in pairs:
        if label.lower() not in by_key:
            unknown[label] = unknown.get(label, 0) + 1
    if len(unknown) == len({label.lower() for label, _ in pairs}):
        raise WorkbenchError(
            f"None of the gold labels ({_quoted(sorted(unknown))}) is one of the model's classes "
            f"({_quoted(model_classes)}): pick the right label column, or a model trained on these labels.")
    classes = list(model_classes) + sorted(unknown)
    index = {label.strip().lower(): i for i, label in enumerate(model_classes)}
    index.update({label.lower(): len(model_classes) + i for i, label in enumerate(sorted(unknown))})
    references = [index[label.lower()] for label, _ in pairs]
    predictions = [index[label.strip().lower()] for _, label in pairs]
    warnings_said = []
    if unknown:
        rows = sum(unknown.values())
        counted = ", ".join(f"'{label}' ({_rows(count)})" for label, count in sorted(unknown.items()))
        warnings_said.append(f"Gold labels the model does not have: {counted}. Its classes are "
                             f"{_quoted(model_classes)}; {'this row counts' if rows == 1 else f'these {rows:,} rows count'} "
                             f"as wrong.")
    if skipped:
        warnings_said.append(f"{_rows(skipped)} without a text or a gold label left out of the measure.")
    return LabelledEvaluation(classification_metrics(references, predictions, classes),
                              classification_report(references, predictions, classes), len(pairs), skipped,
                              unknown, warnings_said)


def _quoted(items) -> str:
    return ", ".join(f"'{item}'" for item in items)


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")
