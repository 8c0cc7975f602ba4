"""Fine-tune tab: upload data, preview it, train in the background, watch, cancel, save, download.

The training itself runs in core.jobs (one job per server, in a process of its own). Buttons here
only change the job; what the tab shows of it comes from the page's job timer
(demos.common.watch_job), so reopening the page re-attaches to a running job and nothing
flickers under progress animations. A refused action shows its reason and changes nothing.
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from core import data as training_data
from core.errors import WorkbenchError
from core.jobs import FINISHED, QUEUED, SAVE_FAILED, describe_progress
from core.limits import MAX_BATCH_SIZE, MAX_EARLY_STOPPING_PATIENCE, MAX_EPOCHS
from core.measurements import measured
from core.model_folders import free_name
from core.models import (FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelChoice, ModelRegistry,
                         is_valid_local_name, packaged_choice)
from core.ownership import ModelOwners, refuse_unless_owner
from core.precision import BF16_AUTO_MIN_PARAMETERS
from core.settings import described
from core.run_plan import DEFAULT_BATCH_SIZES, DEFAULT_EPOCHS, LM_TARGET_STEPS, describe_estimate, plan_run
from core.training import DEFAULT_LEARNING_RATE, LORA_LEARNING_RATES, TrainConfig, base_context_length
from demos import runs
from demos.common import (MODEL_API_HINT, AppContext, JobView, add_picker, as_text, busy_click, confusion_html,
                          defaults_of, form_handler, job_timer_on, local_file, number_for, open_dropdown, show_errors, slider_for)

TASK_CHOICES = [
    ("Classification (e.g. sentiment): CSV/TSV/JSONL with text and label columns", training_data.CLASSIFICATION),
    ("Causal LM (text generation): TXT/MD or a text column", training_data.CAUSAL_LM),
    ("Masked LM (fill-mask): TXT/MD or a text column", training_data.MASKED_LM),
]
UPLOAD_TYPES = [".csv", ".tsv", ".jsonl", ".txt", ".md"]
# What the API's /finetune_preview and /finetune take after their leading parameters, in their
# order (positional API calls rely on it); each default is DEFAULTS'.
PREVIEW_SETTINGS = ("validation_file", "text_column", "label_column", "validation_share", "seed", "epochs",
                    "batch_size", "gradient_accumulation_steps", "max_length", "precision", "lora", "lora_rank",
                    "freeze_embeddings")
RUN_SETTINGS = ("validation_file", "text_column", "label_column", "epochs", "learning_rate", "batch_size",
                "gradient_accumulation_steps", "max_length", "warmup_ratio", "weight_decay", "seed",
                "validation_share", "mlm_probability", "whole_word_masking", "precision", "lora", "checkpoint_every",
                "freeze_embeddings", "eval_steps", "best_metric", "early_stopping_patience", "lora_rank",
                "lora_alpha", "lora_dropout", "lora_target_modules", "lora_save", "report_to")
SIZED = 0  # Epochs and Batch size: 0 (or left out through the API) is sized to the data
EPOCHS_INFO = (f"0: sized to the data (a classifier {DEFAULT_EPOCHS[training_data.CLASSIFICATION]} epochs of "
               f"{DEFAULT_BATCH_SIZES[training_data.CLASSIFICATION]}; a language model {LM_TARGET_STEPS} optimizer "
               f"steps or more, more epochs and smaller batches for a small text). Up to {MAX_EPOCHS}; the best "
               f"epoch's weights are kept.")
BATCH_INFO = f"0: sized to the data, with the epochs. Up to {MAX_BATCH_SIZE}."
MAX_WAIT_SECONDS = 600  # /finetune_wait returns the status by then, whatever it is
WAITS_AT_ONCE = 8  # /finetune_wait calls served at once
DEFAULT_CHECKPOINT_EVERY = 50  # optimizer steps; a checkpoint holds model and optimizer state (~3x the model)
# The form's defaults are TrainConfig's (no value restated here), but for checkpoints: a run
# started from the page can resume after a restart; one from the command line asks for them.
DEFAULTS = {**defaults_of(TrainConfig), "checkpoint_every": DEFAULT_CHECKPOINT_EVERY}
# Masked LM from the packaged MiniLM: what its untrained head gives (bench/fill_mask_minilm.py).
def minilm_mlm_note(figures: dict | None) -> str:
    """Why the packaged MiniLM makes a poor fill-mask model, with its last measurement (the
    figures bench/fill_mask_minilm.py recorded; None: never measured, nothing quoted)."""
    evidence = ""
    if figures:
        distinct = figures["distinct_top_words"]
        gave = ("the same top word for" if distinct == 1 else f"only {distinct} different top words over")
        evidence = (f" Measured here, {figures['epochs']:g} epochs on {figures['kilobytes']} KB of text "
                    f"({figures['steps']} steps) still gave {gave} {figures['sentences']} different test sentences.")
    return ("all-MiniLM-L6-v2 was trained for sentence embeddings and has no masked-LM head: it starts "
            f"untrained.{evidence} Use it to try the workflow; for real fill-mask predictions, fine-tune a Hub "
            "masked LM such as distilbert/distilroberta-base.")


# Which panel shows a model fine-tuned for each training task.
PANEL_TASK = {training_data.CLASSIFICATION: TEXT_CLASSIFICATION, training_data.CAUSAL_LM: TEXT_GENERATION,
              training_data.MASKED_LM: FILL_MASK}
# Encoders that take a new classification head well, for users who have the Hub.
CLASSIFICATION_HUB_BASES = ("distilbert/distilbert-base-uncased", "google-bert/bert-base-uncased")


def base_model_choices(registry: ModelRegistry, task: str) -> list[ModelChoice]:
    """Models to fine-tune for `task`: packaged (offline) first, then local, then Hub ids."""
    from core.packaged import packaged_models

    packaged = [packaged_choice(model) if task not in model.untrained_head_for else
                ModelChoice(model.name, f"{model.short_name} (offline; {task} head untrained)", True)
                for model in packaged_models().values() if task in model.train_tasks]
    if task != training_data.CLASSIFICATION:
        others = registry.choices(PANEL_TASK[task])
    else:
        # Any local encoder takes a new head: classifiers and masked LMs alike.
        others = registry.local_choices(TEXT_CLASSIFICATION, FILL_MASK)
        others += [ModelChoice(repo, repo, False, ready=False) for repo in CLASSIFICATION_HUB_BASES]
    listed = {choice.name for choice in packaged}
    return packaged + [choice for choice in others if choice.name not in listed]


def _base_choices(ctx: AppContext, task: str) -> list[tuple[str, str]]:
    return [(choice.label, choice.name) for choice in base_model_choices(ctx.registry, task)]


def build(ctx: AppContext) -> None:
    runner = ctx.runner
    gr.Markdown("Upload your own data, fine-tune a model on this machine, and use it at once in "
                "the other tabs. Training continues if you close the page; come back to watch it.")
    with gr.Row():
        with gr.Column():
            task = gr.Radio(TASK_CHOICES, value=training_data.CLASSIFICATION, label="What to train")
            train_file = local_file("train.csv", label="Training data", file_types=UPLOAD_TYPES,
                                    elem_id="finetune-train-file")
            validation_file = local_file("validation.csv", label="Validation data (optional; else a share of the "
                                                                 "training data)", file_types=UPLOAD_TYPES)
            with gr.Row():
                text_column = open_dropdown("a column of the file (guessed)", label="Text column", choices=[])
                label_column = open_dropdown("a column of the file (guessed; classification only)",
                                             label="Label column", choices=[])
            preview_button = gr.Button("Preview data")
        with gr.Column():
            initial = _base_choices(ctx, training_data.CLASSIFICATION)
            base_model = open_dropdown(MODEL_API_HINT, choices=initial, value=initial[0][1], label="Base model",
                                       api_example=initial[0][1])
            # A model trained here can be fine-tuned further: the list follows the models folder.
            def base_options(current, task_value):
                choices = _base_choices(ctx, task_value)
                return choices, choices[0][1], None

            add_picker(ctx, base_model, base_options, depends_on=(task,))
            minilm_note = gr.Markdown(f"⚠️ {minilm_mlm_note(measured('minilm_mlm'))}", visible=False, elem_id="finetune-minilm-note")
            model_name = gr.Textbox(label="Name of the new model", value=free_name(ctx.registry.models_dir, "my-model"),
                                    info="Saved in the models folder under this name (proposed from the file's "
                                         "name and the task; type your own).")
            proposed_name = gr.State(model_name.value)  # the last name proposed: replaced only while unchanged
            free_name_offered = gr.State(None)  # offered by the job view once your run's name is taken
            planned = gr.State(None)  # what the last preview showed (None: no preview of this data yet)
            with gr.Accordion("Hyperparameters", open=False):
                epochs = number_for(TrainConfig, "epochs", value=SIZED, info=EPOCHS_INFO, elem_id="finetune-tab-epochs")
                learning_rate = number_for(TrainConfig, "learning_rate", value=DEFAULT_LEARNING_RATE,
                                           info=described(TrainConfig, "learning_rate").limits)
                batch_size = number_for(TrainConfig, "batch_size", value=SIZED, info=BATCH_INFO,
                                        elem_id="finetune-tab-batch")
                accumulation = slider_for(TrainConfig, "gradient_accumulation_steps")
                max_length = slider_for(TrainConfig, "max_length")
                warmup = slider_for(TrainConfig, "warmup_ratio")
                weight_decay = slider_for(TrainConfig, "weight_decay")
                seed = number_for(TrainConfig, "seed", info="The validation split and the training order follow it")
                validation_share = slider_for(TrainConfig, "validation_share")
                with gr.Group(visible=False) as masked_options:
                    mlm_probability = slider_for(TrainConfig, "mlm_probability")
                    whole_word = gr.Checkbox(value=DEFAULTS["whole_word_masking"], label="Whole-word masking")
                lora = gr.Checkbox(value=DEFAULTS["lora"], label="LoRA adapters (trains small adapters instead of every weight)",
                                   info=f"Sets LoRA's learning rate ({LORA_LEARNING_RATES['classification']:g}; "
                                        f"{LORA_LEARNING_RATES['causal-lm']:g} for causal LM) unless you changed "
                                        f"it.")
                with gr.Group(visible=False) as lora_options:
                    lora_rank = slider_for(TrainConfig, "lora_rank")
                    lora_alpha = slider_for(TrainConfig, "lora_alpha")
                    lora_dropout = slider_for(TrainConfig, "lora_dropout")
                    lora_targets = gr.Textbox(label="LoRA target modules", value=DEFAULTS["lora_target_modules"],
                                              info="Comma-separated; empty: the usual ones for the model "
                                                   "(query,value for BERT; c_attn for GPT-2; q_proj,v_proj for "
                                                   "Llama)")
                    lora_save = gr.Radio(
                        [("Merged into the model's weights", "merged"),
                         ("Adapter only (a small download; the panels load it with its base model)", "adapter")],
                        value=DEFAULTS["lora_save"], label="Save the LoRA model")
                precision = gr.Dropdown(
                    [("Automatic", "auto"), ("float32", "fp32"), ("bf16 mixed precision", "bf16"),
                     ("fp16 mixed precision (GPU)", "fp16")], value=DEFAULTS["precision"],
                    label="Precision", info="Automatic: on a GPU bf16 (fp16 where it has no bf16); on a CPU "
                    f"bf16 where it has AMX or AVX512-BF16, for models of "
                    f"{BF16_AUTO_MIN_PARAMETERS // 1_000_000}M weights or more (faster there), else float32.")
                freeze = gr.Checkbox(value=DEFAULTS["freeze_embeddings"], label="Freeze the word embeddings (faster on a CPU)")
                report_to = gr.Dropdown(
                    [("Nowhere", "none"), ("trackio (a local dashboard: trackio show)", "trackio"),
                     ("TensorBoard (event files in the models folder's .tensorboard)", "tensorboard")],
                    value=DEFAULTS["report_to"], label="Also log the run to a dashboard",
                    info="Through Accelerate's trackers; the status says how to open it when the run is done.")
                checkpoint_every = number_for(
                    TrainConfig, "checkpoint_every", value=DEFAULTS["checkpoint_every"],
                    info="0: never. A run with checkpoints can resume after a crash or a restart.")
            with gr.Accordion("Evaluation and best model", open=False):
                gr.Markdown("The validation split is measured at each epoch's end; the weights of the best "
                            "measurement are the ones saved.")
                eval_steps = number_for(TrainConfig, "eval_steps", info="0: at each epoch's end only")
                best_metric = gr.Dropdown(
                    [("Automatic: macro-F1 (classification), loss (language models)", "auto"),
                     ("Validation loss", "loss"), ("Accuracy (classification)", "accuracy"),
                     ("Macro-F1 (classification)", "macro_f1")], value=DEFAULTS["best_metric"],
                    label="Keep the best by")
                patience = number_for(TrainConfig, "early_stopping_patience",
                                      info=f"Stop after this many evaluations without a better one (at most "
                                           f"{MAX_EARLY_STOPPING_PATIENCE}); 0: never")
            with gr.Row():
                start_button = gr.Button("Start fine-tuning", variant="primary")
                cancel_button = gr.Button("Cancel", variant="stop", interactive=False)
            with gr.Column(visible=False) as pending_section:
                gr.Markdown("The trained model waits in memory until you save or discard it.")
                with gr.Row(equal_height=True):
                    save_name = gr.Textbox(label="Save as", scale=2, elem_id="finetune-save-name",
                                           info="Empty: the name the run started with.")
                    save_button = gr.Button("Save what was trained", variant="primary", scale=1)
                    discard_button = gr.Button("Discard", scale=1)
            with gr.Column(visible=False) as interrupted_section:
                interrupted = open_dropdown("the name of an interrupted run",
                                           label="Interrupted runs (resume from their last checkpoint)",
                                           choices=[], elem_id="finetune-interrupted")
                with gr.Row():
                    resume_button = gr.Button("Resume")
                    forget_button = gr.Button("Discard its checkpoint")
    preview_summary = gr.Markdown(label="Data summary", elem_id="finetune-preview")
    preview_table = gr.Dataframe(label="First rows", interactive=False, visible=False, wrap=True,
                                 elem_id="finetune-preview-table")
    progress_bar = gr.HTML(elem_id="finetune-progress")
    status = gr.Markdown(_idle_status(ctx), label="Training status", elem_id="finetune-status")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", label="Loss", elem_id="finetune-loss")
        metrics_table = gr.Dataframe(label="Metrics: before → after", interactive=False,
                                     elem_id="finetune-metrics")
    confusion = gr.HTML(elem_id="finetune-confusion")
    with gr.Row():
        zip_button = gr.Button("Zip the saved model for download", visible=False, size="sm")
        zip_target = gr.Textbox(label="Model to download", visible=False)  # the model the last job saved
        download = gr.File(label="Download the model (.zip)", interactive=False, visible=False)

    # ----- what the tab shows of the job (driven by the page's job timer) ----------------------------
    def render(job, person):
        runs = runner.interrupted_runs()
        mine = person.may_act_on(job.owner)
        queued = runner.queued_for(person)
        last = runner.last_run_of(person) if job.owner != person.id else None  # yours ended, another's runs
        status_text = _status_markdown(job if mine else _as_seen_by_others(job), ctx, queued)
        if last and last.started_at != job.started_at:
            status_text = f"Your last run, {_status_markdown(last)}\n\n{status_text}"
        return [
            _progress_html(job), status_text, _loss_frame(job), _metrics_frame(job),
            _confusion_html(job),
            # Once your run saved its model, its name is taken: your next run is offered a free one
            # (`offer_free_name`). Another person's run ending leaves the name you are typing alone.
            free_name(ctx.registry.models_dir, job.model_name) if job.state == FINISHED and mine else gr.skip(),
            # Cancel: your run while it trains, or your run in line.
            gr.update(interactive=(mine and job.active and job.state != "saving") or
                      bool(queued and queued.state == QUEUED)),
            gr.update(visible=job.awaiting_save and mine),
            job.model_name if job.awaiting_save else "",
            gr.update(value="Retry save" if job.state == SAVE_FAILED else "Save what was trained"),
            gr.update(visible=job.state == FINISHED and mine and _saved_folder(ctx, job.model_name) is not None),
            job.model_name if job.state == FINISHED else "",
            gr.skip() if job.state == FINISHED else gr.update(visible=False, value=None),  # the zip of an earlier model
            gr.update(choices=[(run.label, run.model_name) for run in runs],
                      value=runs[0].model_name if runs else None),
            gr.update(visible=bool(runs)),
        ]

    ctx.job_views.append(JobView(
        [progress_bar, status, loss_plot, metrics_table, confusion, free_name_offered, cancel_button,
         pending_section,
         save_name,
         save_button, zip_button,
         zip_target, download, interrupted, interrupted_section], render))

    def empty_or_taken(name) -> bool:
        return not name or (ctx.registry.models_dir / name).exists()

    def offer_free_name(offered, current_name):
        # Only a name that is taken now (the one your run just saved under) or an empty box is
        # replaced, so that an offer arriving late (the page's first look at the job, on a busy
        # server) never undoes a name typed or proposed from an upload meanwhile.
        if offered and empty_or_taken(current_name):
            return offered, offered  # a proposal: a new upload may replace it
        return gr.skip(), gr.skip()

    free_name_offered.change(offer_free_name, [free_name_offered, model_name], [model_name, proposed_name],
                             queue=False, api_visibility="private", show_progress="hidden")

    # Actions answer with the job's status line, without progress animations (a refused action
    # then leaves every output as it was), and switch the page's job timer on to follow the job.
    action = dict(outputs=status, show_progress="hidden", concurrency_limit=None)

    def follows(event):
        event.success(job_timer_on, None, ctx.job_timer, api_visibility="private", show_progress="hidden")

    # ----- choosing the data ----------------------------------------------------------------------
    def task_changed(task_value):
        choices = _base_choices(ctx, task_value)
        chosen = choices[0][1]
        return (gr.update(choices=choices, value=chosen),
                gr.update(visible=task_value == training_data.CLASSIFICATION),
                gr.update(visible=task_value == training_data.MASKED_LM),
                gr.update(visible=_minilm_masked_lm(task_value, chosen)))

    task.change(task_changed, task, [base_model, label_column, masked_options, minilm_note],
                api_visibility="private", show_progress="hidden")

    def lora_changed(on, rate, task_value):
        # The learning rate follows the defaults only while it holds one of them.
        defaults = {DEFAULT_LEARNING_RATE, *LORA_LEARNING_RATES.values()}
        if rate in defaults:
            rate = LORA_LEARNING_RATES.get(task_value, DEFAULT_LEARNING_RATE) if on else DEFAULT_LEARNING_RATE
        return gr.update(visible=bool(on)), rate

    for trigger in (lora.change, task.change):
        trigger(lora_changed, [lora, learning_rate, task], [lora_options, learning_rate], api_visibility="private",
                show_progress="hidden")
    base_model.change(lambda task_value, base: gr.update(visible=_minilm_masked_lm(task_value, base)),
                      [task, base_model], minilm_note, api_visibility="private", show_progress="hidden")
    validation_file.change(lambda path: gr.update(visible=not path), validation_file, validation_share,
                           api_visibility="private", show_progress="hidden")

    @show_errors
    def file_uploaded(path):
        if not path:
            return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
        info = training_data.inspect_training_upload(path)
        return (gr.update(choices=info.columns, value=info.text_column),
                gr.update(choices=info.columns, value=info.label_column))

    train_file.change(file_uploaded, train_file, [text_column, label_column], api_visibility="private",
                      show_progress="hidden")

    def show_plan(previewed):
        # The first rows and, in Epochs and Batch size, what the sizing came to for this data.
        if not previewed:  # the data changed: the old preview is gone, the boxes say "sized" again
            return gr.update(visible=False), gr.update(info=EPOCHS_INFO), gr.update(info=BATCH_INFO)
        if "epochs" not in previewed:
            return gr.update(visible=True), gr.skip(), gr.skip()
        return (gr.update(visible=True),
                gr.update(info=f"{EPOCHS_INFO} This data, sized: {previewed['epochs']:g}."),
                gr.update(info=f"{BATCH_INFO} This data, sized: {previewed['batch_size']}."))

    def data_changed(task_value, path, validation_path, current_name, proposed, previewed):
        # Another task or file: the preview of the old one goes, and a name the person has not
        # typed themselves follows the new file and task. On a busy server this answer can come
        # after a preview of this very data (Preview pressed right after the upload): that
        # preview stays.
        name = gr.skip()
        if current_name == proposed or empty_or_taken(current_name):
            proposed = free_name(ctx.registry.models_dir, _proposed_name(task_value, path))
            name = proposed
        if previewed and previewed["data"] == _data_of(task_value, path, validation_path):
            return gr.skip(), gr.skip(), name, proposed, gr.skip(), gr.skip(), gr.skip()
        # The plan's table and notes are cleared here, not by `planned.change`: the page's
        # Gradio client ignores state changes in the answer to an unqueued event.
        return "", None, name, proposed, *show_plan(None)

    for trigger in (task.change, train_file.change, validation_file.change):
        # Unqueued: the proposal arrives before the person starts typing a name of their own.
        trigger(data_changed, [task, train_file, validation_file, model_name, proposed_name, planned],
                [preview_summary, planned, model_name, proposed_name, preview_table, epochs, batch_size],
                api_visibility="private", show_progress="hidden", queue=False)

    @form_handler(("task", "train_file", "base_model"), PREVIEW_SETTINGS, DEFAULTS)
    @show_errors
    def preview(request=None, **settings):
        """The split that will train (same seed), with counts, token lengths and warnings; then
        what the run will be (examples, epochs, batch size, optimizer steps; epochs and batch size
        left out, or 0, are sized to the data) and its time on this machine, from a few real steps timed
        now."""
        config = _train_config(**settings, models_dir=str(ctx.registry.models_dir))
        loaded = _load(config)
        base_model = config.base_model
        tokenizer = _tokenizer_or_none(base_model, config.models_dir)
        summary = training_data.preview_training_data(loaded, tokenizer=tokenizer)
        shown, frame = _preview_markdown(summary), _preview_frame(summary)
        # A state, not in the API: it shows the first rows and, in the two boxes left empty, what
        # the sizing came to; `shown_at` makes every preview a change, `data` says what it read.
        previewed = {"shown_at": time.monotonic(),
                     "data": _data_of(settings["task"], settings["train_file"], settings["validation_file"])}
        try:
            if tokenizer is None:
                raise WorkbenchError(f"'{base_model}' cannot be loaded here.")
            context_length = base_context_length(base_model, tokenizer, config.models_dir)
            plan = plan_run(config, loaded, tokenizer, context_length, processes=runner.processes)
        except WorkbenchError as error:
            yield shown + f"\n\n⚠️ The run cannot be planned: {as_text(error)}", frame, previewed
            return
        shown += "\n\n" + _plan_markdown(plan)
        previewed.update(epochs=plan.epochs, batch_size=plan.batch_size)
        if runner.status().active and not ctx.step_timer.known(config, plan):
            yield (shown + "\n\nThe time it takes here is estimated when no training runs (the machine is busy).",
                   frame, previewed)
            return
        if not ctx.step_timer.known(config, plan):
            yield shown + "\n\n_Timing a few training steps on this machine…_", frame, previewed
        try:
            sentence, long_run = describe_estimate(plan, ctx.step_timer.timing(config, plan), config)
        except WorkbenchError as error:
            sentence, long_run = "", [f"The time it takes here could not be measured: {error}"]
        yield (shown + (f"\n\n{sentence}" if sentence else "")
               + "".join(f"\n\n⚠️ {as_text(warning)}" for warning in long_run), frame, previewed)

    preview_inputs = dict(task=task, train_file=train_file, base_model=base_model, validation_file=validation_file,
                          text_column=text_column, label_column=label_column, validation_share=validation_share,
                          seed=seed, epochs=epochs, batch_size=batch_size,
                          gradient_accumulation_steps=accumulation, max_length=max_length, precision=precision,
                          lora=lora, lora_rank=lora_rank, freeze_embeddings=freeze)
    busy_click(preview_button, "Reading the data…", preview, inputs_kwargs=preview_inputs,
               outputs=[preview_summary, preview_table, planned], api_name="finetune_preview")

    planned.change(show_plan, planned, [preview_table, epochs, batch_size], api_visibility="private",
                   show_progress="hidden", queue=False)

    # ----- the job ----------------------------------------------------------------------------------
    @form_handler(("task", "train_file", "base_model", "model_name"), RUN_SETTINGS, DEFAULTS)
    @show_errors
    def start(model_name, request=None, **settings):
        """Start fine-tuning in the background; follow it with /finetune_status. `epochs` and
        `batch_size` left out (or 0) are sized to the data (/finetune_preview says what they come to).
        While another run trains, the run waits in line and starts by itself in its turn."""
        if not settings["train_file"]:
            raise WorkbenchError("Upload a training file first.")
        config = _train_config(**settings)
        # Checked now, so a bad upload is refused before anything starts (the training process
        # reads it again).
        _load(config)
        return _status_markdown(runner.start(config, model_name, ctx.person(request), queue=True))

    follows(busy_click(
        start_button, "Starting…", start, inputs_kwargs=dict(
            task=task, train_file=train_file, base_model=base_model, model_name=model_name,
            validation_file=validation_file, text_column=text_column, label_column=label_column, epochs=epochs,
            learning_rate=learning_rate, batch_size=batch_size, gradient_accumulation_steps=accumulation,
            max_length=max_length, warmup_ratio=warmup, weight_decay=weight_decay, seed=seed,
            validation_share=validation_share, mlm_probability=mlm_probability, whole_word_masking=whole_word,
            precision=precision, lora=lora, checkpoint_every=checkpoint_every, freeze_embeddings=freeze,
            eval_steps=eval_steps, best_metric=best_metric, early_stopping_patience=patience, lora_rank=lora_rank,
            lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_target_modules=lora_targets, lora_save=lora_save,
            report_to=report_to),
        api_name="finetune", outputs=status, concurrency_limit=None))

    @show_errors
    def cancel(request: gr.Request = None):
        """Stop your running job after its current step (then save or discard what was trained), or
        take your run out of the line."""
        person, job = ctx.person(request), runner.status()
        queued = runner.queued_for(person)
        training_own = job.active and job.owner == person.id
        if queued and queued.state == QUEUED and not training_own:  # your own run first, then your place in line
            return _status_markdown(runner.leave_queue(person))
        return _status_markdown(runner.cancel(person))

    follows(cancel_button.click(cancel, None, api_name="finetune_cancel", **action))

    @show_errors
    def save(model_name=None, request: gr.Request = None):
        """Save the model waiting after a cancel or a failed save (under `model_name`, default the
        run's name), in the background: /finetune_status says when it is saved."""
        return _status_markdown(runner.save_pending(model_name, ctx.person(request)))

    follows(save_button.click(save, inputs_kwargs=dict(model_name=save_name), api_name="finetune_save", **action))

    @show_errors
    def discard(request: gr.Request = None):
        """Drop the model waiting after a cancel or a failed save."""
        return _status_markdown(runner.discard_pending(ctx.person(request)))

    follows(discard_button.click(discard, None, api_name="finetune_discard", **action))

    @show_errors
    def resume(run_name=None, request: gr.Request = None):
        """Continue an interrupted run from its last checkpoint."""
        if not run_name:
            raise WorkbenchError("Choose an interrupted run to resume.")
        return _status_markdown(runner.resume(run_name, ctx.person(request)))

    follows(resume_button.click(resume, inputs_kwargs=dict(run_name=interrupted), api_name="finetune_resume",
                                **action))

    @show_errors
    def forget(run_name=None, request: gr.Request = None):
        """Delete an interrupted run's checkpoint and settings."""
        if not run_name:
            raise WorkbenchError("Choose an interrupted run to discard.")
        runner.discard_interrupted(run_name, ctx.person(request))
        return f"Discarded the checkpoint of '{as_text(run_name)}'."

    follows(forget_button.click(forget, inputs_kwargs=dict(run_name=interrupted),
                                api_name="finetune_discard_checkpoint", **action))

    zips = _ZipCache()

    @show_errors
    def zip_model(model_name: str | None = None, request: gr.Request = None):
        """A zip of a model in the models folder (in the tab: the one the last job saved); on a
        shared server, of your own models only (its model card names the data it was trained on)."""
        name = (model_name or "").strip()
        folder = _saved_folder(ctx, name)
        if folder is None:
            raise WorkbenchError(f"There is no saved model named '{name}' in the models folder.")
        refuse_unless_owner(ctx.person(request), ModelOwners(ctx.registry.models_dir).owner_of(folder.name),
                            f"The model '{folder.name}'", "download")
        return zips.archive(folder)

    zip_button.click(zip_model, inputs_kwargs=dict(model_name=zip_target), outputs=download,
                     api_name="finetune_download").success(lambda: gr.update(visible=True), None, download,
                                                           api_visibility="private")

    def finetune_status(request: gr.Request) -> dict:
        """The training job now: state, step, loss curve, metrics before and after, warnings
        (another person's counted only); `queued`: your run in line (its place in `message`), or
        null; `your_last_run`: your last run that ended, or null."""
        person, job = ctx.person(request), runner.status()
        queued, last = runner.queued_for(person), runner.last_run_of(person)
        brief = lambda status: {"state": status.state, "model_name": status.model_name,  # noqa: E731
                                "message": status.message} if status else None
        return {**(job if person.may_act_on(job.owner) else _as_seen_by_others(job)).summary(),
                "queued": brief(queued), "your_last_run": brief(last)}

    gr.api(finetune_status, api_name="finetune_status")

    @show_errors
    def finetune_wait(until: str = "finished,failed,cancelled,save failed", model_name: str = "", phase: str = "",
                      timeout: float = 600, request: gr.Request = None) -> dict:
        """Wait until the job is in one of the states `until` (comma-separated: running, stopping,
        saving, cancelled, save failed, finished, failed, idle), and is the run `model_name` in
        the `phase` (e.g. training) when they are given, or `timeout` seconds (at most 600) pass;
        returns /finetune_status then. It wakes at the job's own changes: no need to poll."""
        states = {state.strip() for state in (until or "").split(",") if state.strip()}
        seconds = float(timeout or 0)
        if not math.isfinite(seconds):
            raise WorkbenchError(f"The timeout must be a number of seconds, up to {MAX_WAIT_SECONDS}.")
        deadline = time.monotonic() + min(max(seconds, 0.0), MAX_WAIT_SECONDS)
        while True:
            seen = runner.changes()
            status = finetune_status(request)
            if (status["state"] in states and (not model_name or status["model_name"] == model_name)
                    and (not phase or status["phase"] == phase)) or time.monotonic() >= deadline:
                return status
            runner.wait_for_change(seen, deadline - time.monotonic())

    # A waiting client holds one of the server's worker threads: a few may wait at once (more
    # wait in Gradio's queue for a place), so that waits never take the threads others need.
    gr.api(finetune_wait, api_name="finetune_wait", concurrency_limit=WAITS_AT_ONCE)
    runs.build(ctx)  # the run history and saved models, below the job


def _minilm_masked_lm(task_value: str, base: str | None) -> bool:
    return task_value == training_data.MASKED_LM and base == "packaged:all-MiniLM-L6-v2"


class _ZipCache:
    """Zips of saved models, built when asked for: one per model, rebuilt when the model folder
    changes (a newer model under the name replaces the old zip), all in one temporary folder
    that is removed when the server exits. Gradio serves a copy from its own cache, which the
    app's Blocks clean (`delete_cache` in app.py)."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._built: dict[str, tuple[int, str]] = {}  # model folder -> (its config's mtime, the zip)
        self._lock = threading.Lock()

    def archive(self, folder: Path) -> str:
        version = (folder / "config.json").stat().st_mtime_ns
        with self._lock:
            known = self._built.get(str(folder))
            if known and known[0] == version and Path(known[1]).is_file():
                return known[1]
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="workbench-zips-"))
                atexit.register(shutil.rmtree, self._folder, True)
            if known:
                Path(known[1]).unlink(missing_ok=True)
            built = shutil.make_archive(str(self._folder / folder.name), "zip", root_dir=folder)
            self._built[str(folder)] = (version, built)
            return built


def _saved_folder(ctx: AppContext, name: str | None) -> Path | None:
    if not name or not is_valid_local_name(name):
        return None
    folder = ctx.registry.models_dir / name
    return folder if (folder / "config.json").is_file() else None


def _load(config):
    """The run's data, read as the training process will read it."""
    if not config.train_file:
        raise WorkbenchError("Upload a training file first.")
    return training_data.load_training_data(
        config.task, config.train_file, config.validation_file, text_column=config.text_column,
        label_column=config.label_column, validation_share=config.validation_share, seed=config.seed)


def _train_config(**values):
    """The TrainConfig of the form's values: a field left empty (None, "") takes TrainConfig's
    default; Epochs and Batch size at 0 are sized to the data, as left out."""
    from core.training import TrainConfig

    given = {name: value for name, value in values.items() if value is not None and value != ""}
    for sized in ("epochs", "batch_size"):
        if not given.get(sized):
            given.pop(sized, None)
    if not given.get("lora"):  # how to save LoRA means nothing without it
        given.pop("lora_save", None)
    for flag in ("whole_word_masking", "lora", "freeze_embeddings"):
        if flag in given:
            given[flag] = bool(given[flag])
    return TrainConfig(**given)


def _plan_markdown(plan) -> str:
    """What the run will be, in two sentences."""
    examples = (f"**{plan.examples:,} {plan.unit}** for training ({plan.validation_examples:,} for validation)")
    steps = (f"**{plan.epochs:g} epochs in batches of {plan.batch_size}"
             + (f" × {plan.accumulation} accumulated" if plan.accumulation > 1 else "")
             + f" = {plan.total_steps:,} optimizer steps**")
    sized = f" (sized to the data: {as_text(plan.sized)})" if plan.sized else ""
    return f"The run: {examples}; {steps}{sized}." + "".join(f"\n\n⚠️ {as_text(w)}" for w in plan.warnings)


def _tokenizer_or_none(base: str, models_dir: str):
    """The base model's tokenizer for token-length stats; the preview works without it."""
    from core.training import base_tokenizer

    try:
        return base_tokenizer(base, models_dir)
    except Exception:
        return None


def _data_of(task: str, train_file: str | None, validation_file: str | None) -> list:
    """What a preview read: the task and the files (as the page sends them)."""
    return [task, train_file or None, validation_file or None]


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


def _preview_frame(summary: dict) -> pd.DataFrame:
    frame = pd.DataFrame(summary["rows"])
    # The label first: long texts would push it out of view.
    return frame[["label", "text"]] if "label" in frame.columns else frame


def _progress_html(job) -> str:
    progress = job.progress if job.active else None
    if progress is None or not progress.total_steps:
        return ""
    share = progress.step / progress.total_steps
    return (f'<progress value="{progress.step}" max="{progress.total_steps}" style="width:100%" '
            f'aria-label="Training progress"></progress><div>{share:.0%} of {progress.total_steps} steps</div>')


def _proposed_name(task_value: str, path: str | None) -> str:
    """A model name from the upload's name and the task: reviews.csv -> reviews-classifier."""
    suffix = {training_data.CLASSIFICATION: "classifier", training_data.CAUSAL_LM: "writer",
              training_data.MASKED_LM: "fill-mask"}.get(task_value, "model")
    return f"{Path(path).stem}-{suffix}" if path else f"my-{suffix}"


def _idle_status(ctx: AppContext) -> str:
    """What the status says before this server ran any job: the last run of the run history."""
    last = next(iter(ctx.history.runs()), None)
    if last is None:
        return "No training has run yet."
    return (f"No training since the server started. The last run, **{as_text(last.get('model_name'))}** "
            f"({runs.outcome(last)}, {runs.when(last)}): {as_text(last.get('message') or '')} The run history "
            f"below lists every run.")


def _as_seen_by_others(job):
    """Another person's job without what may name their data: its warnings are counted only."""
    from dataclasses import replace

    if not job.warnings:
        return job
    count = len(job.warnings)
    return replace(job, warnings=[f"{count} warning{'s' if count > 1 else ''} about this run's data, shown to "
                                  "the person who started it."])


def _status_markdown(job, ctx: AppContext | None = None, queued=None) -> str:
    """The job's status; with `queued` (the person's own run in line), that first."""
    if queued is not None:
        return f"**{as_text(queued.model_name or 'Your run')}**: {as_text(queued.message)}\n\n" + \
            _status_markdown(job, ctx)
    if job.state == "idle" and not job.message:
        return _idle_status(ctx) if ctx else "No training has run yet."
    title = f"**{as_text(job.model_name)}**: " if job.model_name else ""
    lines = [f"{title}{as_text(job.message)} ({job.state})"]
    # Once the job has ended its message says how; the last step stays in view with it.
    if not job.active and job.last_training_step is not None:
        lines.append(f"Last: {describe_progress(job.last_training_step, with_eta=False)}")
    lines += [f"⚠️ {as_text(warning)}" for warning in job.warnings]
    return "\n\n".join(lines)


PLOTTED_TRAIN_POINTS = 200  # the loss plot draws a run's train loss as at most this many points


def _loss_frame(job) -> pd.DataFrame:
    """The loss plot's points. Each train point is the mean loss of one stretch of
    1/PLOTTED_TRAIN_POINTS of the run, drawn once its stretch is done (the last, partial one when
    the run has ended); validation points are drawn as measured. Why: the plot redraws whenever
    its points change, each redraw costs more as the curve grows, and with a point a step (a poll
    every half second) a page watching a fast run kept its browser's renderer on most of a core,
    beside the training on a small machine (bench/watching_page.py). Now it changes at most
    PLOTTED_TRAIN_POINTS times a run. Runs of up to that many steps keep a point a step. (The
    API's status keeps every step's loss.)"""
    curve = pd.DataFrame(job.loss_curve or [], columns=["step", "loss", "series"])
    total_steps = getattr(job.last_training_step or job.progress, "total_steps", 0) or 0
    stretch = math.ceil(total_steps / PLOTTED_TRAIN_POINTS)
    train = curve[curve["series"] == "train"]
    if stretch <= 1 or train.empty:
        return curve
    stretch_of_step = (train["step"] - 1) // stretch
    means = train.groupby(stretch_of_step).agg(step=("step", "max"), loss=("loss", "mean"))
    if job.active and getattr(job.progress, "phase", None) == "training":  # a stretch still training
        # would move its point at every poll; once training is over (evaluating, saving) it is drawn
        means = means[(means.index + 1) * stretch <= train["step"].max()]
    return pd.concat([means.assign(series="train"), curve[curve["series"] != "train"]], ignore_index=True)


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
    """The validation confusion matrix as a heatmap (rows: true label; columns: predicted)."""
    metrics = job.metrics_after or {}
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if not matrix or not labels:
        return ""
    return confusion_html(matrix, labels, "Confusion matrix (validation; rows: true label, columns: predicted)")