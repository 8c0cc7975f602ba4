"""Uploaded files -> texts: format detection, decoding, column choice, limits.

Upload file names are only used for their extension; the bytes are read from the temporary
path the web server gave us.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from core.errors import WorkbenchError
from core.limits import MAX_BATCH_ROWS, MAX_UPLOAD_BYTES

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
TEXT_SUFFIXES = {".txt", ".md"}
# Column names that usually hold the text to score, most likely first.
_TEXT_COLUMN_HINTS = ("text", "sentence", "review", "content", "comment", "tweet", "message", "body")


@dataclass
class TextTable:
    """The rows of an upload: a table (CSV/TSV) or one text per line (TXT)."""

    columns: list[str]  # ["text"] for a plain text file
    rows: list[dict[str, str]]
    encoding: str

    def texts(self, column: str) -> list[str]:
        if column not in self.columns:
            raise WorkbenchError(
                f"The file has no column '{column}'. Columns: {', '.join(self.columns)}.")
        return [row.get(column, "") for row in self.rows]

    def guess_text_column(self) -> str:
        lowered = {name.lower().strip(): name for name in self.columns}
        for hint in _TEXT_COLUMN_HINTS:
            if hint in lowered:
                return lowered[hint]
        # Otherwise the column with the longest texts on average.
        return max(self.columns, key=lambda c: sum(len(r.get(c, "")) for r in self.rows))


def _decode(data: bytes) -> tuple[str, str]:
    if b"\x00" in data[:8192]:
        raise WorkbenchError("The file looks binary, not text: upload a .csv, .tsv or .txt file.")
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def read_text_table(path: str | Path, max_rows: int = MAX_BATCH_ROWS) -> TextTable:
    """Read an uploaded CSV, TSV or TXT file. Raises WorkbenchError with the reason."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES and suffix not in TEXT_SUFFIXES:
        raise WorkbenchError(f"Unsupported file type '{suffix or 'none'}': upload a .csv, .tsv or .txt file.")
    size = path.stat().st_size
    if size == 0:
        raise WorkbenchError("The file is empty.")
    if size > MAX_UPLOAD_BYTES:
        raise WorkbenchError(
            f"The file is too large: {size / 1e6:.1f} MB (limit {MAX_UPLOAD_BYTES / 1e6:.0f} MB).")
    text, encoding = _decode(path.read_bytes())
    if suffix in TEXT_SUFFIXES:
        columns = ["text"]
        rows = [{"text": line} for line in text.splitlines() if line.strip()]
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=TABLE_SUFFIXES[suffix])
        columns = [name for name in (reader.fieldnames or []) if name is not None and name.strip()]
        if not columns:
            raise WorkbenchError("The file has no header row: its first line must name the columns.")
        rows = [{name: (row.get(name) or "") for name in columns} for row in reader]
    if not rows:
        raise WorkbenchError("The file has no rows with text.")
    if len(rows) > max_rows:
        raise WorkbenchError(
            f"Too many rows: {len(rows):,} (limit {max_rows:,}). Split the file and score it in parts.")
    return TextTable(columns, rows, encoding)


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
