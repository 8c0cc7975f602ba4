"""Fine-tune tab: upload data, preview it, train in the background, watch, cancel, save, download.

The training itself runs in core.jobs (one job per server, outside any request): this panel
starts it and streams its status; reopening the page re-attaches to a running job.
"""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from core import data as training_data
from core.errors import WorkbenchError
from core.jobs import CANCELLED, FINISHED, base_model_choices, describe_progress, get_runner
from core.limits import MAX_EPOCHS
from core.training import BF16_AUTO_MIN_PARAMETERS
from demos.common import AppContext, as_text, follow_job, refreshed_pickers, show_errors

TASK_CHOICES = [
    ("Classification (e.g. sentiment): CSV/TSV/JSONL with text and label columns", training_data.CLASSIFICATION),
    ("Causal LM (text generation): TXT/MD or a text column", training_data.CAUSAL_LM),
    ("Masked LM (fill-mask): TXT/MD or a text column", training_data.MASKED_LM),
]
UPLOAD_TYPES = [".csv", ".tsv", ".jsonl", ".txt", ".md"]
_PRECISIONS = {"auto": None, "fp32": False, "bf16": True}  # Precision choice -> TrainConfig.bf16
DEFAULT_CHECKPOINT_EVERY = 50  # optimizer steps; a checkpoint holds model and optimizer state (~3x the model)


def _base_choices(task: str) -> list[tuple[str, str]]:
    return [(choice.label, choice.name) for choice in base_model_choices(task)]


def build(ctx: AppContext) -> None:
    runner = get_runner()
    gr.Markdown("Upload your own data, fine-tune a model on this machine, and use it at once in "
                "the other tabs. Training continues if you close the page; come back to watch it.")
    with gr.Row():
        with gr.Column():
            task = gr.Radio(TASK_CHOICES, value=training_data.CLASSIFICATION, label="What to train")
            train_file = gr.File(label="Training data", file_types=UPLOAD_TYPES)
            validation_file = gr.File(label="Validation data (optional; else a share of the training data)",
                                      file_types=UPLOAD_TYPES)
            with gr.Row():
                text_column = gr.Dropdown(label="Text column", choices=[], allow_custom_value=True)
                label_column = gr.Dropdown(label="Label column", choices=[], allow_custom_value=True)
            preview_button = gr.Button("Preview data")
        with gr.Column():
            initial = _base_choices(training_data.CLASSIFICATION)
            base_model = gr.Dropdown(initial, value=initial[0][1], label="Base model",
                                     allow_custom_value=True)
            model_name = gr.Textbox(label="Name of the new model", value="my-model",
                                    info="Saved in the models folder under this name.")
            with gr.Accordion("Hyperparameters", open=False):
                epochs = gr.Slider(1, MAX_EPOCHS, value=3, step=1, label="Epochs")
                learning_rate = gr.Number(value=5e-5, label="Learning rate")
                batch_size = gr.Slider(1, 64, value=16, step=1, label="Batch size")
                accumulation = gr.Slider(1, 16, value=1, step=1, label="Gradient accumulation steps")
                max_length = gr.Slider(16, 512, value=128, step=16, label="Max length / block size (tokens)")
                warmup = gr.Slider(0, 0.5, value=0.1, step=0.05, label="Warmup (share of steps)")
                weight_decay = gr.Slider(0, 0.3, value=0.01, step=0.01, label="Weight decay")
                seed = gr.Number(value=42, precision=0, label="Seed")
                validation_share = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label="Validation share")
                mlm_probability = gr.Slider(0.05, 0.5, value=0.15, step=0.05, label="Masking probability (masked LM)")
                whole_word = gr.Checkbox(value=False, label="Whole-word masking (masked LM)")
                precision = gr.Dropdown(
                    [("Automatic", "auto"), ("float32", "fp32"), ("bf16 autocast", "bf16")], value="auto",
                    label="Precision", info="Automatic: bf16 autocast on CPUs with AMX for models of "
                    f"{BF16_AUTO_MIN_PARAMETERS // 1_000_000}M weights or more (faster there), else float32.")
                lora = gr.Checkbox(value=False, label="LoRA adapters (causal LM)")
                freeze = gr.Checkbox(value=False, label="Freeze the word embeddings (faster on a CPU)")
                checkpoint_every = gr.Number(
                    value=DEFAULT_CHECKPOINT_EVERY, precision=0, minimum=0, label="Checkpoint every N steps",
                    info="0: never. A run with checkpoints can resume after a crash or a restart.")
            with gr.Row():
                start_button = gr.Button("Start fine-tuning", variant="primary")
                cancel_button = gr.Button("Cancel", variant="stop")
            with gr.Row(visible=False) as cancelled_row:
                save_button = gr.Button("Save what was trained")
                discard_button = gr.Button("Discard")
            with gr.Column(visible=False) as interrupted_section:
                interrupted = gr.Dropdown(label="Interrupted runs (resume from their last checkpoint)",
                                          choices=[], elem_id="finetune-interrupted",
                                          # the API names a run directly; the runner checks it
                                          allow_custom_value=True)
                with gr.Row():
                    resume_button = gr.Button("Resume")
                    forget_button = gr.Button("Discard its checkpoint")
    preview_summary = gr.Markdown(elem_id="finetune-preview")
    preview_table = gr.Dataframe(label="First rows", interactive=False, visible=False)
    status = gr.Markdown("No training has run yet.", elem_id="finetune-status")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", label="Loss", elem_id="finetune-loss")
        metrics_table = gr.Dataframe(label="Metrics: before → after", interactive=False,
                                     elem_id="finetune-metrics")
    confusion = gr.HTML(elem_id="finetune-confusion")
    download = gr.File(label="Download the model (.zip)", interactive=False)

    # ----- choosing the data ----------------------------------------------------------------------
    def task_changed(task_value):
        choices = _base_choices(task_value)
        return (gr.Dropdown(choices=choices, value=choices[0][1]),
                gr.Dropdown(visible=task_value == training_data.CLASSIFICATION))

    task.change(task_changed, task, [base_model, label_column], api_visibility="private")

    @show_errors
    def file_uploaded(path):
        if not path:
            return gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=[], value=None)
        info = training_data.inspect_training_upload(path)
        return (gr.Dropdown(choices=info.columns, value=info.text_column),
                gr.Dropdown(choices=info.columns, value=info.label_column))

    train_file.change(file_uploaded, train_file, [text_column, label_column], api_visibility="private")

    @show_errors
    def preview(task_value, path, validation_path, text_col, label_col, share, base):
        loaded = _load(task_value, path, validation_path, text_col, label_col, share)
        summary = training_data.preview_training_data(loaded, tokenizer=_tokenizer_or_none(base))
        return _preview_markdown(summary), gr.Dataframe(pd.DataFrame(summary["rows"]), visible=True)

    preview_button.click(preview, [task, train_file, validation_file, text_column, label_column,
                                   validation_share, base_model],
                         [preview_summary, preview_table], api_name="finetune_preview")

    # ----- the job ----------------------------------------------------------------------------------
    outputs = [status, loss_plot, metrics_table, confusion, download, cancelled_row]

    zips: dict[tuple, str] = {}  # one archive per saved model, not one per status poll

    def render(job=None):
        job = job or runner.status()
        return (_status_markdown(job), _loss_frame(job), _metrics_frame(job), _confusion_html(job),
                _zip_of(ctx, job, zips), gr.Row(visible=job.state == CANCELLED))

    def watch(progress=gr.Progress()):
        """Stream the job's status until it ends (also re-attaches after a page reload)."""
        for job in follow_job(runner, progress):
            yield render(job)

    @show_errors
    def start(task_value, path, validation_path, text_col, label_col, base, name, n_epochs, lr, batch,
              accumulation_steps, length, warmup_share, decay, seed_value, share, mlm_p, whole, precision_choice,
              use_lora, checkpoint_steps=DEFAULT_CHECKPOINT_EVERY, freeze_embeddings=False,
              progress=gr.Progress()):
        from core.training import TrainConfig

        if not path:
            raise WorkbenchError("Upload a training file first.")
        config = TrainConfig(
            task=task_value, base_model=base, train_file=path, validation_file=validation_path,
            text_column=text_col or None, label_column=label_col or None, epochs=n_epochs,
            learning_rate=lr, batch_size=int(batch), gradient_accumulation_steps=int(accumulation_steps),
            max_length=int(length), warmup_ratio=warmup_share, weight_decay=decay,
            seed=int(seed_value if seed_value is not None else 42), validation_share=share,
            mlm_probability=mlm_p, whole_word_masking=whole, bf16=_PRECISIONS[precision_choice], lora=use_lora,
            checkpoint_every=int(checkpoint_steps or 0), freeze_embeddings=bool(freeze_embeddings),
        )
        # Checked now, so a bad upload is refused before anything starts; the job trains on it.
        checked = _load(task_value, path, validation_path, text_col, label_col, share, seed=config.seed)
        runner.start(config, name, data=checked)
        yield from watch(progress)

    pickers, refresh_pickers = refreshed_pickers(ctx)
    start_event = start_button.click(
        start,
        [task, train_file, validation_file, text_column, label_column, base_model, model_name, epochs,
         learning_rate, batch_size, accumulation, max_length, warmup, weight_decay, seed,
         validation_share, mlm_probability, whole_word, precision, lora, checkpoint_every, freeze],
        outputs, api_name="finetune",
        # The job runner allows one job; the handler only watches it. Without this, Gradio's
        # default limit of one would queue a second person silently behind the whole run
        # instead of answering "busy" at once.
        concurrency_limit=None,
    )
    def interrupted_runs():
        runs = runner.interrupted_runs()
        return (gr.Dropdown(choices=[(run.label, run.model_name) for run in runs],
                            value=runs[0].model_name if runs else None),
                gr.Column(visible=bool(runs)))

    interrupted_outputs = [interrupted, interrupted_section]
    # When the job ends, the new model shows in every panel's picker at once.
    start_event.then(refresh_pickers, pickers, pickers, api_visibility="private").then(
        interrupted_runs, None, interrupted_outputs, api_visibility="private")
    ctx.demo.load(interrupted_runs, None, interrupted_outputs, api_visibility="private")
    ctx.demo.load(watch, None, outputs, api_visibility="private", concurrency_limit=None).then(
        refresh_pickers, pickers, pickers, api_visibility="private").then(
        interrupted_runs, None, interrupted_outputs, api_visibility="private")

    @show_errors
    def resume(name, progress=gr.Progress()):
        if not name:
            raise WorkbenchError("Choose an interrupted run to resume.")
        runner.resume(name)
        yield from watch(progress)

    resume_button.click(
        resume, interrupted, outputs, api_name="finetune_resume", concurrency_limit=None,
    ).then(interrupted_runs, None, interrupted_outputs, api_visibility="private").then(
        refresh_pickers, pickers, pickers, api_visibility="private")

    @show_errors
    def forget(name):
        if not name:
            raise WorkbenchError("Choose an interrupted run to discard.")
        runner.discard_interrupted(name)
        return interrupted_runs()

    forget_button.click(forget, interrupted, interrupted_outputs, api_name="finetune_discard_checkpoint")

    status_button = gr.Button("Refresh status", size="sm")
    status_button.click(lambda: render(), None, outputs, api_name="finetune_status", concurrency_limit=None)

    @show_errors
    def cancel():
        return render(runner.cancel())

    cancel_button.click(cancel, None, outputs, api_name="finetune_cancel", concurrency_limit=None)

    @show_errors
    def save():
        return render(runner.save_cancelled())

    save_button.click(save, None, outputs, api_name="finetune_save").then(
        refresh_pickers, pickers, pickers, api_visibility="private")

    @show_errors
    def discard():
        return render(runner.discard_cancelled())

    discard_button.click(discard, None, outputs, api_name="finetune_discard")


def _load(task_value, path, validation_path, text_col, label_col, share, seed: int = 0):
    if not path:
        raise WorkbenchError("Upload a training file first.")
    return training_data.load_training_data(
        task_value, path, validation_path or None, text_column=text_col or None,
        label_column=label_col or None, validation_share=share, seed=seed)


def _tokenizer_or_none(base: str):
    """The base model's tokenizer for token-length stats; the preview works without it."""
    from core.training import base_tokenizer

    try:
        return base_tokenizer(base)
    except Exception:
        return None


def _preview_markdown(summary: dict) -> str:
    lines = [f"**{summary['train_rows']:,}** training rows, **{summary['validation_rows']:,}** validation rows."]
    if summary.get("label_counts"):
        counts = ", ".join(f"{as_text(name)}: {count}" for name, count in summary["label_counts"].items())
        lines.append(f"Labels: {counts}.")
    if summary.get("token_lengths"):
        stats = summary["token_lengths"]
        lines.append("Tokens per text: " + ", ".join(f"{key} {value:.0f}" for key, value in stats.items()) + ".")
    lines += [f"⚠️ {as_text(warning)}" for warning in summary.get("warnings") or []]
    return "\n\n".join(lines)


def _status_markdown(job) -> str:
    if job.state == "idle" and not job.message:
        return "No training has run yet."
    title = f"**{job.model_name}**: " if job.model_name else ""
    lines = [f"{title}{as_text(job.message)} ({job.state})"]
    # Once the job has ended its message says how; the last step stays in view with it.
    if not job.active and job.last_training_step is not None:
        lines.append(f"Last: {describe_progress(job.last_training_step, with_eta=False)}")
    lines += [f"⚠️ {as_text(warning)}" for warning in job.warnings]
    return "\n\n".join(lines)


def _loss_frame(job) -> pd.DataFrame:
    return pd.DataFrame(job.loss_curve or [], columns=["step", "loss", "series"])


_SHOWN_METRICS = ("loss", "perplexity", "accuracy", "macro_f1")


def _metrics_frame(job) -> pd.DataFrame:
    before, after = job.metrics_before or {}, job.metrics_after or {}
    rows = [{"metric": name, "before": _fmt(before.get(name)), "after": _fmt(after.get(name))}
            for name in _SHOWN_METRICS if name in before or name in after]
    for label, scores in (after.get("per_class") or {}).items():
        for measure in ("precision", "recall", "f1"):
            rows.append({"metric": f"{label} {measure}",
                         "before": _fmt((before.get("per_class") or {}).get(label, {}).get(measure)),
                         "after": _fmt(scores.get(measure))})
    return pd.DataFrame(rows, columns=["metric", "before", "after"])


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _confusion_html(job) -> str:
    """The validation confusion matrix as a shaded table (rows: true label; columns: predicted)."""
    metrics = job.metrics_after or {}
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if not matrix or not labels:
        return ""
    peak = max(max(row) for row in matrix) or 1
    head = "".join(f"<th>{html.escape(str(label))}</th>" for label in labels)
    body = ""
    for label, row in zip(labels, matrix):
        cells = "".join(
            f'<td style="background: rgba(79, 70, 229, {0.1 + 0.8 * count / peak:.2f}); '
            f'text-align:center; padding:4px 10px">{count}</td>' for count in row)
        body += f"<tr><th>{html.escape(str(label))}</th>{cells}</tr>"
    return (f"<p><b>Confusion matrix</b> (validation; rows: true label, columns: predicted)</p>"
            f"<table><tr><th></th>{head}</tr>{body}</table>")


def _zip_of(ctx: AppContext, job, cache: dict[tuple, str]) -> str | None:
    """A zip of the saved model for download (only for a model the job saved)."""
    if job.state != FINISHED or not job.model_name:
        return None
    folder = ctx.registry.models_dir / job.model_name
    if not folder.is_dir():
        return None
    key = (str(folder), job.finished_at)
    if key not in cache:
        archive = Path(tempfile.mkdtemp(prefix="workbench-zip-")) / job.model_name
        cache[key] = shutil.make_archive(str(archive), "zip", root_dir=folder)
    return cache[key]
