"""Evaluation metrics computed offline (scikit-learn and formulas; no `evaluate.load`, which
fetches its scripts from the Hub)."""

from __future__ import annotations

import math


def classification_metrics(labels: list[int], predictions: list[int], label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(label_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
        "labels": list(label_names),
    }


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross-entropy), capped so a diverged model reports a huge number, not inf."""
    return float(math.exp(min(mean_loss, 50.0)))
