"""Metrics through Hugging Face `evaluate`, with the Hub unreachable (conftest), and the
measure of a classifier against a file's gold labels."""

from __future__ import annotations

import hashlib
import random

import pytest

from core.errors import WorkbenchError
from core.metrics import (METRIC_MODULES, SHIPPED_METRICS, classification_metrics, evaluate_labelled,
                          load_metric)

# The standard modules as huggingface/evaluate publishes them (metrics/<name>/<name>.py at
# a7dd338): shipped unchanged, so they give the numbers the Hub's modules give.
UPSTREAM_SHA256 = {
    "accuracy": "13c80a4b9777ae25ced377fc1fb74be243653fe233ddc711388c34918f5f63e4",
    "confusion_matrix": "30d60b0809eaba3f2f7ef68f14749a904aa7d91ef0c0012fd18b710b1de47459",
    "f1": "dbe4c6e47b60910b5e091952f528fb6efdf52fc90d65056a34ae96a2fc8e2ee0",
    "precision": "2937eca901b5798f1d9046b874ce4afa117faeb1ea481a7735cf64b03f72813f",
    "recall": "e6dc65e223b2273797e7f4fe19957400c51725a02ef4e1921cee643191522ec6",
}


def test_the_shipped_modules_are_the_upstream_ones_unchanged():
    assert set(UPSTREAM_SHA256) == set(SHIPPED_METRICS)
    for name, digest in UPSTREAM_SHA256.items():
        assert hashlib.sha256((METRIC_MODULES / name / f"{name}.py").read_bytes()).hexdigest() == digest, name


def test_the_modules_load_with_the_hub_unreachable_and_even_in_offline_mode(monkeypatch):
    import evaluate

    with pytest.raises(Exception):  # by name, evaluate asks the Hub for the script: unreachable here
        evaluate.load("accuracy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_metric.cache_clear()
    assert load_metric("accuracy").compute(predictions=[1, 0], references=[1, 1]) == {"accuracy": 0.5}


def test_the_numbers_are_scikit_learn_s_on_random_labels():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rng = random.Random(3)
    labels = [rng.randrange(3) for _ in range(300)]
    predictions = [label if rng.random() < 0.6 else rng.randrange(3) for label in labels]
    metrics = classification_metrics(labels, predictions, ["neg", "neu", "pos"])
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=[0, 1, 2])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert metrics["macro_precision"] == pytest.approx(precision.mean())
    assert [metrics["per_class"][n]["recall"] for n in ("neg", "neu", "pos")] == pytest.approx(list(recall))
    assert [metrics["per_class"][n]["support"] for n in ("neg", "neu", "pos")] == list(support)
    assert metrics["confusion_matrix"] == confusion_matrix(labels, predictions, labels=[0, 1, 2]).tolist()


def test_a_class_never_predicted_scores_zero_without_a_warning(recwarn):
    metrics = classification_metrics([0, 1, 1], [0, 0, 0], ["a", "b"])
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert not [w for w in recwarn if "ill-defined" in str(w.message)]


def test_gold_labels_match_the_model_s_classes_whatever_their_case():
    measured = evaluate_labelled([" Positive", "NEGATIVE", "positive"], ["positive", "negative", "negative"],
                                 ["negative", "positive"])
    assert measured.rows == 3 and measured.metrics["accuracy"] == pytest.approx(2 / 3)
    assert measured.metrics["confusion_matrix"] == [[1, 0], [1, 1]]  # rows gold, columns predicted
    assert measured.warnings == [] and measured.unknown_labels == {}
    assert "negative" in measured.report and "accuracy" in measured.report and "macro avg" in measured.report
    # The header starts with a word, so trimming leading blanks cannot shift its columns.
    header, _, first_class = measured.report.splitlines()[:3]
    assert header.startswith("class") and header.index("precision") + len("precision") == first_class.index(".") + 4


def test_gold_labels_the_model_lacks_are_named_and_count_as_wrong():
    measured = evaluate_labelled(["positive", "neutral", "neutral", "negative", ""],
                                 ["positive", "positive", "negative", "negative", "positive"],
                                 ["negative", "positive"])
    assert measured.unknown_labels == {"neutral": 2}
    assert measured.metrics["labels"] == ["negative", "positive", "neutral"]
    assert measured.metrics["accuracy"] == pytest.approx(2 / 4)
    assert measured.metrics["per_class"]["neutral"]["recall"] == 0.0
    assert measured.skipped == 1 and measured.rows == 4
    assert "'neutral' (2 rows)" in measured.warnings[0] and "count as wrong" in measured.warnings[0]
    assert "1 row without a text or a gold label" in measured.warnings[1]


def test_gold_labels_coded_otherwise_are_refused_with_both_sets_named():
    with pytest.raises(WorkbenchError, match="None of the gold labels \\('0', '1'\\).*'negative', 'positive'"):
        evaluate_labelled(["0", "1", "1"], ["negative", "positive", "positive"], ["negative", "positive"])
