"""Uploaded files -> texts: format detection, decoding, column choice, limits.

Upload file names are only used for their extension; the bytes are read from the temporary
path the web server gave us.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import WorkbenchError
from core.transformers_import import transformers_settled
from core.limits import (MAX_BATCH_ROWS, MAX_CLASSES, MAX_TRAIN_ROWS, MAX_TRAIN_UPLOAD_BYTES,
                         MAX_UPLOAD_BYTES)

if TYPE_CHECKING:  # imported for annotations only: loading `datasets` is slow, so it waits for use
    import datasets

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
TEXT_SUFFIXES = {".txt", ".md"}
JSONL_SUFFIX = ".jsonl"
_SCORING_FILES = "a .csv, .tsv or .txt file"
MIB = 2**20  # sizes are said in MiB everywhere (the limits in core/limits.py are whole MiB)
# Column names that usually hold the text to score, most likely first.
_TEXT_COLUMN_HINTS = ("text", "sentence", "review", "content", "comment", "tweet", "message", "body")


@dataclass
class TextTable:
    """The rows of an upload: a table (CSV/TSV/JSONL) or one text per line (TXT/MD)."""

    columns: list[str]  # ["text"] for a plain text file
    rows: list[dict[str, str]]
    encoding: str
    warnings: list[str] = field(default_factory=list)  # how the file was read, for the person

    def texts(self, column: str) -> list[str]:
        if column not in self.columns:
            raise WorkbenchError(
                f"The file has no column '{column}'. Columns: {', '.join(self.columns)}.")
        return [row.get(column, "") for row in self.rows]

    def guess_text_column(self, exclude: Iterable[str] = ()) -> str:
        """A column named like a text column, else the one with the longest texts on average."""
        excluded = set(exclude)
        candidates = [name for name in self.columns if name not in excluded]
        hinted = _hinted_column(candidates, _TEXT_COLUMN_HINTS)
        if hinted is not None:
            return hinted
        return max(candidates, key=lambda c: sum(len(r.get(c, "")) for r in self.rows))


    def guess_label_column(self) -> str | None:
        """A column named like labels, else the one with the fewest distinct values per row; None
        when no column looks like labels (a single column, free text everywhere)."""
        return _guess_label_column(self) if len(self.columns) > 1 else None


def _hinted_column(columns: list[str], hints: tuple[str, ...]) -> str | None:
    """The column whose name matches the earliest hint (case and spaces ignored), if any."""
    lowered = {name.lower().strip(): name for name in columns}
    return next((lowered[hint] for hint in hints if hint in lowered), None)


def _check_suffix(path: Path, allowed: Iterable[str], accepted: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise WorkbenchError(f"Unsupported file type '{suffix or 'none'}': upload {accepted}.")
    return suffix


def _read_bytes(path: Path, max_bytes: int, subject: str = "The file") -> bytes:
    # The size is checked before reading so an oversized upload never lands in memory.
    size = path.stat().st_size
    if size == 0:
        raise WorkbenchError(f"{subject} is empty.")
    if size > max_bytes:
        raise WorkbenchError(
            f"{subject} is too large: {size / MIB:.1f} MiB (limit {max_bytes / MIB:g} MiB).")
    return path.read_bytes()


def _decode(data: bytes, subject: str = "The file", accepted: str = _SCORING_FILES) -> tuple[str, str]:
    if b"\x00" in data[:8192]:
        raise WorkbenchError(f"{subject} looks binary, not text: upload {accepted}.")
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def _parse_rows(text: str, suffix: str, subject: str = "The file") -> tuple[list[str], list[dict[str, str]], list[str]]:
    """Columns, rows and warnings of decoded text; every cell is a string ("" when missing)."""
    if suffix in TEXT_SUFFIXES:
        return ["text"], [{"text": line} for line in text.splitlines() if line.strip()], []
    if suffix == JSONL_SUFFIX:
        return (*_parse_jsonl(text, subject), [])
    warnings: list[str] = []
    try:
        records = _csv_records(_normalise_line_ends(text), TABLE_SUFFIXES[suffix], subject, warnings)
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise WorkbenchError(f"{subject} is not a valid {suffix[1:].upper()} file: {error}.") from error
    header = records[0] if records else []
    columns = [name for name in header if name.strip()]
    if not columns:
        raise WorkbenchError(f"{subject} has no header row: its first line must name the columns.")
    # Short rows are padded, cells beyond the header left out (and said): every row keeps its place.
    positions = [index for index, name in enumerate(header) if name.strip()]
    rows = [{header[i]: (record[i] if i < len(record) else "") for i in positions} for record in records[1:]]
    warnings += _header_warnings(header, positions, rows, subject)
    warnings += _extra_cell_warnings(header, records[1:], subject)
    return columns, rows, warnings


def _header_warnings(header: list[str], positions: list[int], rows: list[dict[str, str]], subject: str) -> list[str]:
    """A warning when the first line looks like a row of data rather than column names: a file
    saved without a header loses its first row into the names, silently."""
    telling = []
    for index in positions:
        name = header[index].strip()
        values = [row[header[index]].strip() for row in rows]
        repeated = len(set(values)) < len(values)  # a column of labels, not of free texts
        if (repeated and name.casefold() in {value.casefold() for value in values}) or _PLAIN_NUMBER.fullmatch(name) \
                or (len(name.split()) >= 6 and name.endswith((".", "!"))):
            telling.append(name)
    if not telling:
        return []
    shown = ", ".join(f"'{name[:40]}'" for name in telling[:3])
    return [f"The first line of {subject} looks like data, not column names ({shown}): it was read as the "
            "header, so that row is not used. If the file has no header line, add one (for example "
            "text,label) at the top."]


def _extra_cell_warnings(header: list[str], records: list[list[str]], subject: str) -> list[str]:
    """A warning when rows have more cells than the header names: an unquoted comma inside a text
    splits it, and every cell after it moves one column to the right."""
    longer = [number for number, record in enumerate(records, start=1)
              if any(cell.strip() for cell in record[len(header):])]
    if not longer:
        return []
    rows = "1 row has" if len(longer) == 1 else f"{len(longer):,} rows have"
    return [f"{rows} more cells than the header of {subject} names (row {longer[0]} first): the extra cells "
            "were left out, and that row's cells may be shifted (a text holding the separator must be in "
            "double quotes). Check the column choice and the preview."]


def added_column_names(existing: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """Names for columns added next to a file's own: each wanted name, with _2, _3, ... when the
    file already has a column of that name, so an added column never hides one of theirs."""
    taken = {name.strip().casefold() for name in existing}
    chosen = []
    for name in wanted:
        candidate, number = name, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate.casefold())
        chosen.append(candidate)
    return chosen


def _normalise_line_ends(text: str) -> str:
    """Line ends as the csv module reads them. Spreadsheet exports often carry a lone carriage
    return inside a line (a pasted line break): it is text, not a row break, and becomes a space.
    A file with carriage returns only (old Mac line ends) keeps them as its line ends."""
    if "\n" not in text:
        return text.replace("\r", "\n")
    return _LONE_CARRIAGE_RETURN.sub(" ", text)


_LONE_CARRIAGE_RETURN = re.compile(r"\r(?!\n)")


def _csv_records(text: str, delimiter: str, subject: str, warnings: list[str], first_line: int = 1) -> list[list[str]]:
    """The non-empty records of CSV text. A quote that opens and is never properly closed would
    swallow the following lines into one cell (up to the next stray quote, or the end of the
    file): that line is read with its quotes as plain characters, the rest is read normally, and
    a warning names the line."""
    lines = _physical_lines(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, consumed = [], 0
    for record in reader:
        start, consumed = consumed, reader.line_num
        raw = "".join(lines[start:consumed])
        if '"' in raw and not _strictly_valid(raw, delimiter):
            warnings.append(f"Line {first_line + start} of {subject} opens a quote (\") that is never closed: "
                            "that line was read with its quotes as plain text. Check that row.")
            plain = next(csv.reader([lines[start]], delimiter=delimiter, quoting=csv.QUOTE_NONE), [])
            rest = _csv_records("".join(lines[start + 1:]), delimiter, subject, warnings, first_line + start + 1)
            return records + ([plain] if plain else []) + rest
        if record:  # blank lines are not rows
            records.append(record)
    return records


def _physical_lines(text: str) -> list[str]:
    """The lines as the csv module counts them (after _normalise_line_ends: ended by a newline)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _strictly_valid(record_text: str, delimiter: str) -> bool:
    """Whether one record's text is well-formed CSV: every quoted field closed, and closed by a
    quote followed by a delimiter or the line's end."""
    try:
        for _ in csv.reader(io.StringIO(record_text, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return False
    return True


def _parse_jsonl(text: str, subject: str) -> tuple[list[str], list[dict[str, str]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise WorkbenchError(f"Line {number} of {subject} is not valid JSON: {error.msg}.") from error
        if not isinstance(record, dict):
            raise WorkbenchError(f"Line {number} of {subject} must be a JSON object like "
                                 '{"text": "...", "label": "..."}.')
        records.append(record)
    # Columns in order of first appearance; a record may leave some out.
    columns = list(dict.fromkeys(key for record in records for key in record if str(key).strip()))
    return columns, [{name: _cell(record.get(name)) for name in columns} for record in records]


def _cell(value: object) -> str:
    """A JSON value as the text a CSV cell would hold: 1 -> "1", null -> ""."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _check_row_count(rows: list, max_rows: int, subject: str, advice: str) -> None:
    if not rows:
        raise WorkbenchError(f"{subject} has no rows with text.")
    if len(rows) > max_rows:
        raise WorkbenchError(f"Too many rows: {len(rows):,} (limit {max_rows:,}). {advice}")


def read_text_table(path: str | Path, max_rows: int = MAX_BATCH_ROWS) -> TextTable:
    """Read an uploaded CSV, TSV or TXT file. Raises WorkbenchError with the reason."""
    path = Path(path)
    name = path.name  # only the base name: the server's temporary folder means nothing to people
    suffix = _check_suffix(path, {*TABLE_SUFFIXES, *TEXT_SUFFIXES}, _SCORING_FILES)
    text, encoding = _decode(_read_bytes(path, MAX_UPLOAD_BYTES, subject=name), subject=name)
    columns, rows, warnings = _parse_rows(text, suffix, subject=name)
    _check_row_count(rows, max_rows, name, "Split the file and score it in parts.")
    return TextTable(columns, rows, encoding, warnings)


# ----- training uploads ------------------------------------------------------------------------
CAUSAL_LM = "causal-lm"
CLASSIFICATION = "classification"
MASKED_LM = "masked-lm"
TRAIN_TASKS = (CAUSAL_LM, CLASSIFICATION, MASKED_LM)


@dataclass
class TrainingData:
    """An upload turned into train/validation datasets, checked and ready for the training loop."""

    task: str  # one of TRAIN_TASKS
    train: "datasets.Dataset"  # column "text" (str); classification also "label" (int)
    validation: "datasets.Dataset"  # same columns
    label_names: list[str] | None  # classification: label id -> name (id2label); else None
    warnings: list[str]  # shown to the person before training starts
    source: str  # one line for the model card, e.g. "reviews.csv: 480 train / 120 validation rows"


TRAIN_SUFFIXES = {*TABLE_SUFFIXES, JSONL_SUFFIX, *TEXT_SUFFIXES}
_TRAINING_FILES = "a .csv, .tsv, .jsonl, .txt or .md file"
_TABLE_FILES = "a .csv, .tsv or .jsonl file"
# Column names that usually hold the class, most likely first.
_LABEL_COLUMN_HINTS = ("label", "labels", "sentiment", "class", "category", "target", "y")
MIN_CLASS_EXAMPLES = 5  # fewer training examples than this: the class is learned and measured poorly
# Latin-1 decodes any bytes, so text full of control characters after it was really in another
# encoding (Shift-JIS, GBK, ...): refused rather than trained on as garbage. A few stray ones (a
# Windows-1252 quote) are tolerated; the Latin-1 warning asks the person to check the preview.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_MAX_CONTROL_SHARE = 0.01
_TOKEN_STATS_SAMPLE = 10_000  # first training texts tokenized for the preview's length statistics


@dataclass
class UploadInfo:
    """What the fine-tuning form needs to offer column choices for an upload."""

    columns: list[str]  # ["text"] for a plain text file
    text_column: str | None  # guessed
    label_column: str | None  # guessed; None when no column looks like labels
    rows: int
    encoding: str  # "utf-8", "utf-8-sig" (with a byte-order mark) or "latin-1"


def inspect_training_upload(path: str | Path) -> UploadInfo:
    """Read a training upload and guess its columns. Refuses bad files as loading would."""
    table, _ = _read_training_table(Path(path))
    label_column = _guess_label_column(table)
    text_column = _guess_text_column(table, label_column)
    return UploadInfo(table.columns, text_column, label_column, len(table.rows), table.encoding)


@transformers_settled()  # datasets work: see core.transformers_import
def load_training_data(task: str, train_path: str | Path, validation_path: str | Path | None = None,
                       text_column: str | None = None, label_column: str | None = None,
                       validation_share: float = 0.1, seed: int = 0) -> TrainingData:
    """Uploads -> checked train/validation datasets. Raises WorkbenchError before anything starts.

    Without a validation file, ``validation_share`` of the rows is split off (stratified by class
    for classification; ignored when a validation file is given). Columns are guessed when not given.
    """
    if task not in TRAIN_TASKS:
        raise WorkbenchError(f"Unknown training task '{task}': choose one of {', '.join(TRAIN_TASKS)}.")
    train_path = Path(train_path)
    table, warnings = _read_training_table(train_path)
    text_column, label_column = _choose_columns(task, table, train_path, text_column, label_column)
    texts, labels = _examples(table, train_path.name, text_column, label_column, warnings)
    label_names = None if labels is None else _label_names(labels, label_column, train_path.name)
    dataset = _to_dataset(texts, labels, label_names)
    if validation_path:
        validation_path = Path(validation_path)
        validation = _validation_file(validation_path, train_path.name, text_column, label_column,
                                      label_names, warnings)
        train, note = dataset, f" (validation from {validation_path.name})"
    else:
        train, validation = _split(dataset, validation_share, seed, stratify=label_names is not None)
        note = ""
    warnings += _overlap_warnings(train, validation)
    if label_names is not None:
        warnings += _class_warnings(train, validation, label_names)
    source = f"{train_path.name}: {len(train):,} train / {len(validation):,} validation rows{note}"
    return TrainingData(task, train, validation, label_names, warnings, source)


@transformers_settled()
def preview_training_data(data: TrainingData, tokenizer=None, rows: int = 5) -> dict:
    """What the person checks before training: first rows, sizes, class balance, token lengths."""
    first = data.train.select(range(min(rows, len(data.train))))[:]
    if data.label_names is None:
        shown = [{"text": text} for text in first["text"]]
        label_counts = None
    else:  # label names, not ids: the person knows their labels by name
        shown = [{"text": text, "label": data.label_names[label]}
                 for text, label in zip(first["text"], first["label"])]
        counts = _label_counts(data.train)
        label_counts = {name: counts[index] for index, name in enumerate(data.label_names)}
    return {
        "rows": shown,
        "train_rows": len(data.train),
        "validation_rows": len(data.validation),
        "label_counts": label_counts,
        "token_lengths": None if tokenizer is None else _token_lengths(data.train, tokenizer),
        "warnings": list(data.warnings),
    }


# ----- writing -----
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_safe(cell) -> str:
    """A cell for a CSV people open in a spreadsheet: text that would start a formula
    (=, +, -, @; CSV injection) gets a leading apostrophe, so it shows as text and never runs.
    Plain numbers such as -3.5 stay as they are."""
    text = "" if cell is None else str(cell)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


# ----- reading one file -----
def _read_training_table(path: Path) -> tuple[TextTable, list[str]]:
    """The rows of one training or validation file, plus warnings about how it was read."""
    name = path.name  # only the base name: the server's temporary folder means nothing to people
    suffix = _check_suffix(path, TRAIN_SUFFIXES, _TRAINING_FILES)
    data = _read_bytes(path, MAX_TRAIN_UPLOAD_BYTES, subject=name)
    text, encoding = _decode(data, subject=name, accepted=_TRAINING_FILES)
    warnings = []
    if encoding == "latin-1":
        _refuse_undecodable(text, name)
        warnings.append(f"{name} is not UTF-8, so it was read as Latin-1: check that accented letters "
                        "look right in the preview, or save the file as UTF-8.")
    elif not data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8"  # _decode says "utf-8-sig" for both; keep that name for files with a BOM
    columns, rows, parse_warnings = _parse_rows(text, suffix, subject=name)
    _check_row_count(rows, MAX_TRAIN_ROWS, name, f"Train on a sample of {name}.")
    warnings += parse_warnings
    return TextTable(columns, rows, encoding, parse_warnings), warnings


def _refuse_undecodable(text: str, name: str) -> None:
    if len(_CONTROL_CHARACTERS.findall(text)) > _MAX_CONTROL_SHARE * len(text):
        raise WorkbenchError(f"{name} could not be decoded: it is neither UTF-8 nor Latin-1 text. "
                             "Save it as UTF-8 and upload it again.")


# ----- columns -----
def _guess_label_column(table: TextTable, exclude: str | None = None) -> str | None:
    """A column named like labels, else the one with the fewest distinct values per row."""
    candidates = [name for name in table.columns if name != exclude]
    hinted = _hinted_column(candidates, _LABEL_COLUMN_HINTS)
    if hinted is not None:
        return hinted
    # A column named like texts is never the label column, however repetitive.
    text_column = _hinted_column(candidates, _TEXT_COLUMN_HINTS)
    scored = []
    for column in candidates:
        values = [value.strip() for value in table.texts(column) if value.strip()]
        distinct = len(set(values))
        if column != text_column and 2 <= distinct <= min(MAX_CLASSES, len(values) // 2):
            scored.append((distinct / len(values), column))
    return min(scored, key=lambda score: score[0])[1] if scored else None


def _guess_text_column(table: TextTable, label_column: str | None) -> str | None:
    exclude = [label_column] if label_column else []
    return table.guess_text_column(exclude) if len(table.columns) > len(exclude) else None


def _choose_columns(task: str, table: TextTable, path: Path, text_column: str | None,
                    label_column: str | None) -> tuple[str, str | None]:
    """The columns to use: the person's choice, else a guess. Labels only for classification."""
    if task != CLASSIFICATION:
        # Language models learn from texts alone; a label column picked in the form is ignored.
        return text_column or table.guess_text_column(), None
    if path.suffix.lower() in TEXT_SUFFIXES:
        raise WorkbenchError(f"Classification needs a text column and a label column: upload {_TABLE_FILES}, "
                             f"not {path.suffix.lower()}.")
    label_column = label_column or _guess_label_column(table, exclude=text_column)
    if label_column is None:
        raise WorkbenchError(f"Could not tell which column of {path.name} holds the labels: choose the label "
                             "column.")
    text_column = text_column or _guess_text_column(table, label_column)
    if text_column is None:
        raise WorkbenchError(f"{path.name} has only the column '{label_column}': classification needs a text "
                             "column and a label column.")
    if text_column == label_column:
        raise WorkbenchError(f"The text column and the label column are both '{text_column}': choose two "
                             "different columns.")
    return text_column, label_column


def _column_values(table: TextTable, name: str, column: str) -> list[str]:
    if column not in table.columns:
        raise WorkbenchError(f"{name} has no column '{column}'. Columns: {', '.join(table.columns)}.")
    values = table.texts(column)
    if not any(value.strip() for value in values):
        raise WorkbenchError(f"The column '{column}' of {name} is empty.")
    return values


def _examples(table: TextTable, name: str, text_column: str, label_column: str | None,
              warnings: list[str]) -> tuple[list[str], list[str] | None]:
    """Texts (and stripped labels) of the rows that have them; skipped rows are counted in a warning."""
    texts = _column_values(table, name, text_column)
    labels = None if label_column is None else [v.strip() for v in _column_values(table, name, label_column)]
    keep = [i for i, text in enumerate(texts) if text.strip() and (labels is None or labels[i])]
    if not keep:
        raise WorkbenchError(f"{name} has no row with both a text and a label.")
    if len(keep) < len(texts):
        missing = "text" if labels is None else "a text or a label"
        warnings.append(f"Skipped {len(texts) - len(keep):,} rows of {name} without {missing}.")
    return [texts[i] for i in keep], None if labels is None else [labels[i] for i in keep]


# ----- labels -----
def _label_names(labels: list[str], column: str, name: str) -> list[str]:
    """Distinct labels, sorted; numerically when all are integers (so "10" comes after "2")."""
    distinct = set(labels)
    if len(distinct) < 2:
        raise WorkbenchError(f"Classification needs at least 2 classes, but the column '{column}' of {name} "
                             f"has only one: '{labels[0]}'.")
    if len(distinct) > MAX_CLASSES:
        raise WorkbenchError(f"Too many classes: {len(distinct):,} in the column '{column}' of {name} (limit "
                             f"{MAX_CLASSES}). Is it really the label column?")
    if all(re.fullmatch(r"[+-]?\d+", label) for label in distinct):
        return sorted(distinct, key=lambda label: (int(label), label))
    return sorted(distinct)


def _quoted(values: list[str], limit: int = 10) -> str:
    listed = ", ".join(f"'{value}'" for value in values[:limit])
    return listed + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _label_counts(dataset: "datasets.Dataset") -> Counter:
    return Counter(dataset.select_columns(["label"])[:]["label"])  # without formatting the texts


# ----- datasets and validation -----
def _to_dataset(texts: list[str], labels: list[str] | None, label_names: list[str] | None) -> "datasets.Dataset":
    # Imported here: `datasets` is slow to import and the web page must load without it.
    from datasets import ClassLabel, Dataset, Features, Value

    if label_names is None:
        return Dataset.from_dict({"text": texts}, features=Features({"text": Value("string")}))
    # A ClassLabel column (ids into label_names) is what stratified splitting requires.
    index = {label: number for number, label in enumerate(label_names)}
    return Dataset.from_dict({"text": texts, "label": [index[label] for label in labels]},
                             features=Features({"text": Value("string"), "label": ClassLabel(names=label_names)}))


def _validation_file(path: Path, train_name: str, text_column: str, label_column: str | None,
                     label_names: list[str] | None, warnings: list[str]) -> "datasets.Dataset":
    """An uploaded validation file, read with the training file's columns and labels."""
    table, read_warnings = _read_training_table(path)
    warnings += read_warnings
    if path.suffix.lower() in TEXT_SUFFIXES:
        text_column = "text"  # a plain text file has no column names to match
    texts, labels = _examples(table, path.name, text_column, label_column, warnings)
    if labels is not None:
        unknown = sorted(set(labels) - set(label_names))
        if unknown:
            raise WorkbenchError(f"Validation labels not seen in training: {_quoted(unknown)}. Every label in "
                                 f"{path.name} must also appear in {train_name}.")
    return _to_dataset(texts, labels, label_names)


def _split(dataset: "datasets.Dataset", share: float, seed: int,
           stratify: bool) -> tuple["datasets.Dataset", "datasets.Dataset"]:
    """Split off a validation share; stratified so every class keeps its proportion in both."""
    if share is None or not 0 < share < 1:
        raise WorkbenchError(f"The validation share must be between 0 and 1 (got {share}), or upload a "
                             "validation file.")
    label_names = dataset.features["label"].names if stratify else []
    # Stratifying needs at least one validation and one training row per class.
    n_validation = max(round(len(dataset) * share), len(label_names), 1)
    if len(dataset) - n_validation < max(len(label_names), 1):
        classes = f" for {len(label_names)} classes" if stratify else ""
        raise WorkbenchError(f"Too few rows to split off a validation set: {len(dataset)} rows{classes}. Add "
                             "rows or upload a validation file.")
    if stratify:
        counts = _label_counts(dataset)
        single = [name for index, name in enumerate(label_names) if counts[index] < 2]
        if single:
            raise WorkbenchError(f"Only 1 example of {_quoted(single)}: splitting off a validation set needs "
                                 "at least 2 per class. Add examples or upload a validation file.")
        return _stratified_split(dataset, n_validation, seed)
    parts = dataset.train_test_split(test_size=n_validation, seed=seed)
    return parts["train"], parts["test"]


def _stratified_split(dataset: "datasets.Dataset", n_validation: int,
                      seed: int) -> tuple["datasets.Dataset", "datasets.Dataset"]:
    """What ``train_test_split(test_size=n, seed=seed, stratify_by_column="label")`` returns, fast.

    That method hands datasets' stratified sampler ``np.asarray`` of a lazy label Column, which
    reads it row by row (about 20 s for 50,000 rows in datasets 5.2); the same sampler and the
    same generator fed the labels as one array give the same split in milliseconds.
    """
    import numpy as np
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    labels = np.asarray(dataset.select_columns(["label"])[:]["label"])
    train_indices, validation_indices = next(stratified_shuffle_split_generate_indices(
        labels, len(dataset) - n_validation, n_validation, rng=np.random.default_rng(seed)))
    return dataset.select(train_indices), dataset.select(validation_indices)


def _overlap_warnings(train: "datasets.Dataset", validation: "datasets.Dataset") -> list[str]:
    seen = {text.strip() for text in train[:]["text"]}
    shared = sum(1 for text in validation[:]["text"] if text.strip() in seen)
    if not shared:
        return []
    return [f"{shared:,} validation texts also appear in the training data, so validation scores will look "
            "better than they are."]


def _class_warnings(train: "datasets.Dataset", validation: "datasets.Dataset",
                    label_names: list[str]) -> list[str]:
    train_counts, validation_counts = _label_counts(train), _label_counts(validation)
    warnings = []
    small = [f"'{name}' ({train_counts[index]})" for index, name in enumerate(label_names)
             if train_counts[index] < MIN_CLASS_EXAMPLES]
    if small:
        warnings.append(f"Fewer than {MIN_CLASS_EXAMPLES} training examples for {', '.join(small)}: the model "
                        "will learn these classes poorly.")
    unmeasured = [name for index, name in enumerate(label_names) if not validation_counts[index]]
    if unmeasured:
        warnings.append(f"No validation examples of {_quoted(unmeasured)}: their accuracy will not be "
                        "measured.")
    return warnings


def _token_lengths(dataset: "datasets.Dataset", tokenizer) -> dict[str, float]:
    texts = dataset.select(range(min(len(dataset), _TOKEN_STATS_SAMPLE)))[:]["text"]
    # verbose=False: texts longer than the model's maximum are normal here (training cuts them).
    lengths = sorted(len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"])
    p95 = lengths[math.ceil(0.95 * len(lengths)) - 1]  # nearest-rank percentile
    return {"min": lengths[0], "mean": sum(lengths) / len(lengths), "max": lengths[-1], "p95": p95}
