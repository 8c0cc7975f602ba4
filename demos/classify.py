"""Sentiment panel: one text -> every class with its confidence; a file -> a scored table."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from core import inference
from core.data import read_text_table
from core.limits import MAX_BATCH_ROWS
from core.models import TEXT_CLASSIFICATION
from demos.common import AppContext, model_picker, show_errors


def build(ctx: AppContext) -> None:
    model = model_picker(ctx, TEXT_CLASSIFICATION, api_name="sentiment_models")
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text", lines=3, placeholder="I loved every minute of it.")
            classify_button = gr.Button("Classify", variant="primary")
        scores = gr.Label(label="Classes and confidence", elem_id="sentiment-scores")

    gr.Markdown(f"### Score a file\nA CSV/TSV (pick the text column) or a TXT file with one text "
                f"per line; up to {MAX_BATCH_ROWS:,} rows.")
    with gr.Row():
        upload = gr.File(label="CSV, TSV or TXT", file_types=[".csv", ".tsv", ".txt"])
        with gr.Column():
            column = gr.Dropdown(label="Text column", choices=[], allow_custom_value=True)
            batch_button = gr.Button("Score file", variant="primary")
    table = gr.Dataframe(label="Scored rows", headers=["text", "label", "score"],
                         elem_id="sentiment-table", interactive=False)
    download = gr.File(label="Scored CSV")

    @show_errors
    def classify(text_value, model_name):
        return inference.classify(ctx.registry, model_name, text_value)

    classify_button.click(classify, [text, model], scores, api_name="classify")
    text.submit(classify, [text, model], scores, api_visibility="private")

    @show_errors
    def choose_column(file_path):
        if not file_path:
            return gr.Dropdown(choices=[], value=None)
        table_data = read_text_table(file_path)
        return gr.Dropdown(choices=table_data.columns, value=table_data.guess_text_column())

    upload.change(choose_column, upload, column, api_visibility="private")

    @show_errors
    def classify_file(file_path, column_name, model_name):
        if not file_path:
            raise gr.Error("Upload a CSV, TSV or TXT file first.")
        table_data = read_text_table(file_path)
        column_name = column_name or table_data.guess_text_column()
        scored = inference.classify_batch(ctx.registry, model_name, table_data.texts(column_name))
        shown = pd.DataFrame({
            "text": [row.text for row in scored],
            "label": [row.label for row in scored],
            "score": [round(row.score, 4) for row in scored],
        })
        return shown, _scored_csv(table_data.columns, table_data.rows, scored)

    batch_button.click(classify_file, [upload, column, model], [table, download],
                       api_name="classify_batch")


def _scored_csv(columns, rows, scored) -> str:
    """The uploaded rows with label and score columns added, as a new CSV file."""
    out_path = Path(tempfile.mkdtemp(prefix="workbench-scored-")) / "scored.csv"
    with out_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "label", "score"])
        for row, result in zip(rows, scored):
            writer.writerow([*(row[name] for name in columns), result.label,
                             "" if result.score != result.score else f"{result.score:.4f}"])
    return str(out_path)
