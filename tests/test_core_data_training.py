"""Training uploads -> checked train/validation datasets: formats, columns, labels, splits,
warnings, and refusals a person can act on. No models; token statistics use a tiny tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.data import (CAUSAL_LM, CLASSIFICATION, MASKED_LM, inspect_training_upload, load_training_data,
                       preview_training_data)
from core.errors import WorkbenchError
from core.limits import MAX_CLASSES, MAX_TRAIN_ROWS, MAX_TRAIN_UPLOAD_BYTES


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def csv_of(rows: list[tuple[str, str]], header: str = "text,label") -> str:
    return header + "\n" + "".join(f"{text},{label}\n" for text, label in rows)


def labelled(counts: dict[str, int]) -> list[tuple[str, str]]:
    """Distinct texts, `count` of each label."""
    return [(f"{label} example number {i}", label) for label, count in counts.items() for i in range(count)]


def texts_of(dataset) -> list[str]:
    return list(dataset[:]["text"])


def label_names_of(data, dataset) -> list[str]:
    return [data.label_names[index] for index in dataset[:]["label"]]


# ----- formats ----------------------------------------------------------------------------------
def test_txt_for_causal_lm_is_one_row_per_non_empty_line(tmp_path):
    lines = [f"line {i} of the story" for i in range(10)]
    path = write(tmp_path, "story.txt", "\n\n".join(lines) + "\n   \n")
    data = load_training_data(CAUSAL_LM, path, validation_share=0.2)
    assert sorted(texts_of(data.train) + texts_of(data.validation)) == sorted(lines)
    assert (len(data.train), len(data.validation)) == (8, 2)
    assert data.train.column_names == ["text"] and data.label_names is None
    assert data.source == "story.txt: 8 train / 2 validation rows"


def test_masked_lm_takes_only_the_text_column_of_a_table(tmp_path):
    path = write(tmp_path, "notes.csv", csv_of(labelled({"a": 5, "b": 5}), header="body,label"))
    data = load_training_data(MASKED_LM, path, label_column="label", validation_share=0.2)
    assert data.train.column_names == ["text"] and data.validation.column_names == ["text"]
    assert all(text.endswith(tuple("0123456789")) for text in texts_of(data.train))


def test_jsonl_with_integer_labels_and_a_row_without_text(tmp_path):
    records = [{"text": f"review {i}", "label": i % 2, "stars": 3} for i in range(20)] + [{"text": None, "label": 1}]
    path = write(tmp_path, "reviews.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    data = load_training_data(CLASSIFICATION, path, validation_share=0.2)
    assert data.label_names == ["0", "1"]
    assert len(data.train) + len(data.validation) == 20
    assert any("Skipped 1 rows of reviews.jsonl" in warning for warning in data.warnings)
    row = data.train[0]
    assert int(row["text"].split()[1]) % 2 == row["label"]


def test_tsv_is_read_with_tabs(tmp_path):
    rows = "".join(f"a text, with a comma {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(10))
    path = write(tmp_path, "data.tsv", "sentence\tanswer\n" + rows)
    data = load_training_data(CLASSIFICATION, path, label_column="answer", validation_share=0.2)
    assert data.label_names == ["no", "yes"]
    assert all(", with a comma" in text for text in texts_of(data.train))


def test_integer_labels_are_sorted_numerically_and_stored_as_ids(tmp_path):
    rows = [(f"text {i}", str(label)) for i, label in enumerate([10, 2, 1] * 4)]
    path = write(tmp_path, "numbers.csv", csv_of(rows))
    data = load_training_data(CLASSIFICATION, path, validation_share=0.25)
    assert data.label_names == ["1", "2", "10"]  # not "1", "10", "2"
    expected = dict(rows)
    for row in data.train:
        assert data.label_names[row["label"]] == expected[row["text"]]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = write(tmp_path, "bom.csv", "\ufeff" + csv_of(labelled({"x": 5, "y": 5})))
    info = inspect_training_upload(path)
    assert info.columns == ["text", "label"] and info.encoding == "utf-8-sig"
    assert inspect_training_upload(write(tmp_path, "plain.csv", csv_of([("a", "b")]))).encoding == "utf-8"


# ----- columns ----------------------------------------------------------------------------------
def test_columns_are_guessed_by_name(tmp_path):
    path = write(tmp_path, "named.csv", csv_of(labelled({"sports": 3, "news": 3}), header="sentence,category"))
    info = inspect_training_upload(path)
    assert (info.text_column, info.label_column, info.rows) == ("sentence", "category", 6)


def test_without_known_names_the_label_is_the_column_with_few_distinct_values(tmp_path):
    rows = "".join(f"{i},a rather long text number {i},{'up' if i % 3 else 'down'}\n" for i in range(12))
    path = write(tmp_path, "odd.csv", "id,said,mood\n" + rows)
    info = inspect_training_upload(path)
    assert (info.columns, info.text_column, info.label_column) == (["id", "said", "mood"], "said", "mood")
    data = load_training_data(CLASSIFICATION, path, validation_share=0.25)  # uses the same guesses
    assert data.label_names == ["down", "up"] and texts_of(data.train)[0].startswith("a rather long text")


def test_a_text_file_has_one_text_column_and_no_labels(tmp_path):
    info = inspect_training_upload(write(tmp_path, "notes.md", "# Title\n\nsome words\n"))
    assert (info.columns, info.text_column, info.label_column, info.rows) == (["text"], "text", None, 2)


# ----- validation -------------------------------------------------------------------------------
def test_the_percentage_split_is_stratified(tmp_path):
    path = write(tmp_path, "skewed.csv", csv_of(labelled({"common": 40, "rare": 4, "odd": 4})))
    for seed in range(5):  # an unstratified split misses a small class for most seeds
        data = load_training_data(CLASSIFICATION, path, validation_share=0.25, seed=seed)
        assert Counter(label_names_of(data, data.validation)) == {"common": 10, "rare": 1, "odd": 1}
        assert Counter(label_names_of(data, data.train)) == {"common": 30, "rare": 3, "odd": 3}


def test_the_stratified_split_is_the_one_datasets_makes(tmp_path):
    """core.data feeds datasets' stratified sampler directly (train_test_split is slow with it)."""
    from datasets import ClassLabel, Dataset, Features, Value

    rows = labelled({"common": 40, "rare": 4, "odd": 4})
    data = load_training_data(CLASSIFICATION, write(tmp_path, "skewed.csv", csv_of(rows)),
                              validation_share=0.25, seed=3)
    features = Features({"text": Value("string"), "label": ClassLabel(names=data.label_names)})
    unsplit = Dataset.from_dict({"text": [text for text, _ in rows],
                                 "label": [data.label_names.index(label) for _, label in rows]}, features=features)
    expected = unsplit.train_test_split(test_size=12, seed=3, stratify_by_column="label")
    assert texts_of(data.train) == texts_of(expected["train"])
    assert texts_of(data.validation) == texts_of(expected["test"])


def test_core_data_loads_without_importing_datasets():
    """The web page imports core.data; `datasets` is slow to import, so only loading pulls it in."""
    code = "import sys, core.data; assert 'datasets' not in sys.modules and 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)


def test_the_split_depends_on_the_seed_and_is_repeatable(tmp_path):
    path = write(tmp_path, "lines.txt", "\n".join(f"line {i}" for i in range(50)))
    first = texts_of(load_training_data(CAUSAL_LM, path, seed=1).validation)
    assert texts_of(load_training_data(CAUSAL_LM, path, seed=1).validation) == first
    assert texts_of(load_training_data(CAUSAL_LM, path, seed=2).validation) != first


def test_a_validation_file_is_used_as_is(tmp_path):
    train = write(tmp_path, "train.csv", csv_of(labelled({"pos": 6, "neg": 6})))
    validation = write(tmp_path, "check.csv", csv_of([("fine indeed", "pos"), ("awful", "neg"), ("ok", "pos")]))
    data = load_training_data(CLASSIFICATION, train, validation, validation_share=0.5)
    assert len(data.train) == 12
    assert texts_of(data.validation) == ["fine indeed", "awful", "ok"]
    assert label_names_of(data, data.validation) == ["pos", "neg", "pos"]
    assert data.source == "train.csv: 12 train / 3 validation rows (validation from check.csv)"


def test_a_text_validation_file_fits_a_table_for_language_models(tmp_path):
    train = write(tmp_path, "posts.csv", "id,review\n" + "".join(f"{i},post number {i}\n" for i in range(6)))
    data = load_training_data(CAUSAL_LM, train, write(tmp_path, "held-out.txt", "another post\n"))
    assert texts_of(data.train)[0] == "post number 0" and texts_of(data.validation) == ["another post"]


# ----- warnings ---------------------------------------------------------------------------------
def test_latin1_files_are_read_with_a_warning(tmp_path):
    path = write(tmp_path, "french.csv", csv_of([("café crème", "bon"), ("pâté froid", "mauvais")] * 5)
                 .encode("latin-1"))
    assert inspect_training_upload(path).encoding == "latin-1"
    data = load_training_data(CLASSIFICATION, path, validation_share=0.2)
    assert "café crème" in texts_of(data.train) + texts_of(data.validation)
    assert any("french.csv is not UTF-8, so it was read as Latin-1" in warning for warning in data.warnings)


def test_texts_in_both_train_and_validation_are_counted(tmp_path):
    train = write(tmp_path, "train.csv", csv_of(labelled({"pos": 6, "neg": 6})))
    validation = write(tmp_path, "val.csv", csv_of([("pos example number 0", "pos"),
                                                    ("neg example number 3", "neg"), ("new text", "pos")]))
    data = load_training_data(CLASSIFICATION, train, validation)
    assert "2 validation texts also appear in the training data" in " ".join(data.warnings)


def test_small_classes_and_unmeasured_classes_are_warned_about(tmp_path):
    train = write(tmp_path, "train.csv", csv_of(labelled({"big": 10, "rare": 3})))
    validation = write(tmp_path, "val.csv", csv_of([("a new big text", "big")]))
    warnings = " ".join(load_training_data(CLASSIFICATION, train, validation).warnings)
    assert "Fewer than 5 training examples for 'rare' (3)" in warnings
    assert "No validation examples of 'rare'" in warnings
    assert "'big'" not in warnings


def test_a_clean_upload_has_no_warnings(tmp_path):
    path = write(tmp_path, "clean.csv", csv_of(labelled({"pos": 10, "neg": 10})))
    assert load_training_data(CLASSIFICATION, path, validation_share=0.2).warnings == []


# ----- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, message", [
    ("reviews.csv", b"", "reviews.csv is empty"),
    ("reviews.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "reviews.csv looks binary, not text"),
    ("reviews.xlsx", b"text,label\na,b\n", r"Unsupported file type '\.xlsx': upload a \.csv, \.tsv, \.jsonl"),
    ("reviews.csv", ("text\n" + "日本語のテキストです。\n" * 20).encode("shift_jis"),
     "reviews.csv could not be decoded: it is neither UTF-8 nor Latin-1"),
    ("reviews.jsonl", b'{"text": "a", "label": "b"}\n{"text": oops}\n', "Line 2 of reviews.jsonl is not valid JSON"),
    ("reviews.jsonl", b'["a", "b"]\n', "Line 1 of reviews.jsonl must be a JSON object"),
    ("reviews.csv", b"text,label\n", "reviews.csv has no rows with text"),
])
def test_unreadable_files_are_refused_with_the_reason(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(WorkbenchError, match=message):
        load_training_data(CLASSIFICATION, path)
    with pytest.raises(WorkbenchError, match=message):
        inspect_training_upload(path)


def test_files_over_the_size_limit_are_refused(tmp_path):
    path = write(tmp_path, "huge.txt", b"x" * (MAX_TRAIN_UPLOAD_BYTES + 1))
    with pytest.raises(WorkbenchError, match=r"huge.txt is too large: 20.0 MiB \(limit 20 MiB\)"):  # as the README says
        load_training_data(CAUSAL_LM, path)


def test_too_many_rows_are_refused(tmp_path):
    path = write(tmp_path, "long.txt", b"row\n" * (MAX_TRAIN_ROWS + 1))
    with pytest.raises(WorkbenchError, match=r"Too many rows: 50,001 \(limit 50,000\). Train on a sample of long.txt"):
        load_training_data(CAUSAL_LM, path)


def test_a_missing_column_is_named(tmp_path):
    path = write(tmp_path, "reviews.csv", csv_of(labelled({"pos": 5, "neg": 5})))
    with pytest.raises(WorkbenchError, match=r"reviews.csv has no column 'review'. Columns: text, label"):
        load_training_data(CLASSIFICATION, path, text_column="review")


def test_an_empty_column_is_refused(tmp_path):
    path = write(tmp_path, "reviews.csv", "text,label\ngood,\nbad,\n")
    with pytest.raises(WorkbenchError, match="The column 'label' of reviews.csv is empty"):
        load_training_data(CLASSIFICATION, path, label_column="label")


def test_one_class_is_not_enough(tmp_path):
    path = write(tmp_path, "reviews.csv", csv_of(labelled({"pos": 8})))
    with pytest.raises(WorkbenchError, match="at least 2 classes, but the column 'label' of reviews.csv has only one: 'pos'"):
        load_training_data(CLASSIFICATION, path)


def test_too_many_classes_are_refused(tmp_path):
    path = write(tmp_path, "reviews.csv", csv_of(labelled({f"c{i}": 2 for i in range(MAX_CLASSES + 1)})))
    with pytest.raises(WorkbenchError, match=r"Too many classes: 51 in the column 'label' of reviews.csv \(limit 50\)"):
        load_training_data(CLASSIFICATION, path, label_column="label")


def test_validation_labels_must_be_seen_in_training(tmp_path):
    train = write(tmp_path, "train.csv", csv_of(labelled({"pos": 5, "neg": 5})))
    validation = write(tmp_path, "val.csv", csv_of([("hm", "maybe"), ("ok", "pos"), ("eh", "meh")]))
    with pytest.raises(WorkbenchError, match="Validation labels not seen in training: 'maybe', 'meh'. Every label "
                                             "in val.csv must also appear in train.csv"):
        load_training_data(CLASSIFICATION, train, validation)


def test_a_class_with_one_example_cannot_be_split(tmp_path):
    path = write(tmp_path, "reviews.csv", csv_of(labelled({"pos": 6, "neg": 6, "once": 1})))
    with pytest.raises(WorkbenchError, match="Only 1 example of 'once'.*upload a validation file"):
        load_training_data(CLASSIFICATION, path, validation_share=0.2)


def test_too_few_rows_to_split_are_refused(tmp_path):
    path = write(tmp_path, "one.txt", "a single line\n")
    with pytest.raises(WorkbenchError, match="Too few rows to split off a validation set: 1 rows"):
        load_training_data(CAUSAL_LM, path)


def test_classification_needs_a_table(tmp_path):
    with pytest.raises(WorkbenchError, match=r"Classification needs a text column and a label column: upload a "
                                             r"\.csv, \.tsv or \.jsonl file, not \.txt"):
        load_training_data(CLASSIFICATION, write(tmp_path, "lines.txt", "one\ntwo\n"))


def test_unknown_tasks_are_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="Unknown training task 'translation'"):
        load_training_data("translation", write(tmp_path, "lines.txt", "one\ntwo\n"))


# ----- preview ----------------------------------------------------------------------------------
def test_preview_shows_rows_counts_and_warnings(tmp_path):
    path = write(tmp_path, "reviews.csv", csv_of(labelled({"pos": 12, "neg": 4})))
    data = load_training_data(CLASSIFICATION, path, validation_share=0.25)
    summary = preview_training_data(data, rows=3)
    assert len(summary["rows"]) == 3 and set(summary["rows"][0]) == {"text", "label"}
    assert all(row["text"].startswith(row["label"]) for row in summary["rows"])  # names, not ids
    assert (summary["train_rows"], summary["validation_rows"]) == (12, 4)
    assert summary["label_counts"] == {"neg": 3, "pos": 9}
    assert summary["token_lengths"] is None
    assert summary["warnings"] == data.warnings and "'neg' (3)" in summary["warnings"][0]


def test_preview_token_lengths_use_the_tokenizer(tmp_path):
    from tiny_models import _bert_tokenizer

    tokenizer = _bert_tokenizer()
    lines = ["the cat"] * 10 + ["a dog sees the red house"] * 9 + ["my friend reads a long book every day"]
    train = write(tmp_path, "lines.txt", "\n".join(lines))
    data = load_training_data(MASKED_LM, train, write(tmp_path, "check.txt", "the bird\n"))
    summary = preview_training_data(data, tokenizer=tokenizer)
    short, middle, longest = (len(tokenizer(text)["input_ids"]) for text in dict.fromkeys(lines))
    assert short < middle < longest
    assert summary["label_counts"] is None and summary["rows"][0].keys() == {"text"}
    assert summary["token_lengths"] == {"min": short, "mean": (10 * short + 9 * middle + longest) / 20,
                                        "max": longest, "p95": middle}


def test_stray_carriage_returns_and_a_broken_quote_keep_every_training_row(tmp_path):
    rows = [f"{i},tweet {i} about the day" + ("\rsent from my phone" if i % 5 == 0 else "") +
            f",{'good' if i % 2 else 'bad'}" for i in range(200)]
    rows[57] = '57,"loving this weather,good'  # a quote opened and never closed
    path = write(tmp_path, "tweets.csv", ("id,tweet,label\r\n" + "\r\n".join(rows) + "\r\n").encode())
    data = load_training_data(CLASSIFICATION, path, validation_share=0.2)
    assert len(data.train) + len(data.validation) == 200
    assert any(warning.startswith("Line 59 of tweets.csv opens a quote") for warning in data.warnings)
    assert "tweet 5 about the day sent from my phone" in texts_of(data.train) + texts_of(data.validation)
