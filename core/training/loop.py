"""One Accelerate training loop for causal LM, sequence classification and masked LM.


Modelled on transformers' `examples/pytorch/*/run_*_no_trainer.py`: tokenise; `group_texts`
chunking for language models; dynamic padding with length-grouped batches for classification;
`get_scheduler`; AdamW with transformers' weight-decay groups (none on biases and norms);
gradient accumulation with `accelerator.accumulate`, clipping and Accelerate's mixed precision.
The loop knows nothing of the UI: it reports through `on_progress`, checks `should_stop()`
every step, and runs the same from the browser, the CLI and `torchrun`. Evaluation keeps the
best weights (BestWeights); Accelerate's trackers log the run where asked."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import checkpoints
from core.data import CAUSAL_LM, CLASSIFICATION, TrainingData
from core.errors import WorkbenchError
from core.metrics import classification_metrics, perplexity
from core.precision import Hardware, choose_precision
from core.run_plan import ROWS_PER_MAP_BATCH, block_size, size_to_data
from core.training import artifacts
from core.training.config import TRACKING_PROJECT, Progress, TrainConfig, TrainResult
from core.training.loading import base_model_source, context_length, load_base_model, load_tokenizer

# ----- data -----------------------------------------------------------------------------------
def tokenize_data(config: TrainConfig, data: TrainingData, tokenizer, model, warnings: list[str]):
    """Tokenised train/validation datasets and the collator for the task."""
    import transformers

    if config.task == CLASSIFICATION:
        def encode(batch):
            return tokenizer(batch["text"], truncation=True, max_length=config.max_length)

        splits = [split.map(encode, batched=True, remove_columns=["text"]).rename_column("label", "labels")
                  for split in (data.train, data.validation)]
        return splits[0], splits[1], transformers.DataCollatorWithPadding(tokenizer)

    # Whole-word masking finds word boundaries from character offsets (fast tokenizers only).
    whole_words = config.task != CAUSAL_LM and config.whole_word_masking
    if whole_words and not tokenizer.is_fast:
        raise WorkbenchError(f"Whole-word masking needs a fast tokenizer, and '{config.base_model}' has "
                             f"none: turn whole-word masking off.")

    def encode(batch):
        # Each row ends with its line break, as run_clm's `keep_linebreaks`: concatenated into
        # blocks, the lines of a text file read as lines ("every day.\nThe farmer") again.
        return tokenizer([text + "\n" for text in batch["text"]], return_offsets_mapping=whole_words)

    train_ids, validation_ids = (split.map(encode, batched=True, remove_columns=split.column_names)
                                 for split in (data.train, data.validation))
    shortest = min(sum(len(ids) for ids in split["input_ids"]) for split in (train_ids, validation_ids))
    block, lowered = block_size(config.max_length, context_length(model.config, tokenizer), shortest)
    if lowered:
        warnings.append(lowered)

    def group_texts(batch):
        # Concatenate everything and cut it into blocks (the remainder is dropped).
        joined = {key: sum(batch[key], []) for key in batch}
        usable = (len(joined["input_ids"]) // block) * block
        grouped = {key: [values[i:i + block] for i in range(0, usable, block)] for key, values in joined.items()}
        if config.task == CAUSAL_LM:
            grouped["labels"] = [list(ids) for ids in grouped["input_ids"]]
        return grouped

    keep = ["input_ids", "attention_mask"] + (["offset_mapping"] if whole_words else [])
    train_set, validation_set = (split.remove_columns([c for c in split.column_names if c not in keep])
                                 .map(group_texts, batched=True, batch_size=ROWS_PER_MAP_BATCH)
                                 for split in (train_ids, validation_ids))
    if config.task == CAUSAL_LM:
        return train_set, validation_set, transformers.default_data_collator
    if tokenizer.mask_token is None:
        raise WorkbenchError(f"'{config.base_model}' has no mask token: it cannot be trained as a masked LM.")
    # Whole words are always replaced by the mask token (the collator cannot swap in random
    # words for them): said here rather than left for the collator to warn about and change.
    replacements = dict(mask_replace_prob=1.0, random_replace_prob=0.0) if config.whole_word_masking else {}
    collator = transformers.DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=config.mlm_probability, whole_word_mask=config.whole_word_masking,
        **replacements)
    return train_set, validation_set, collator


def _loaders(config: TrainConfig, train_set, validation_set, collator):
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(config.seed)
    if config.task == CLASSIFICATION:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        # Batches of similar length: dynamic padding then pads little.
        sampler = LengthGroupedSampler(config.batch_size, lengths=[len(ids) for ids in train_set["input_ids"]],
                                       generator=generator)
        # The loader draws its worker seed from `generator` too, not from the global RNG that
        # dropout uses: a resumed run then continues exactly as an uninterrupted one would.
        train_loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, collate_fn=collator,
                                  generator=generator)
    else:
        train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator,
                                  collate_fn=collator)
    validation_loader = DataLoader(validation_set, batch_size=config.batch_size, collate_fn=collator)
    return train_loader, validation_loader, generator


# ----- evaluation -----------------------------------------------------------------------------
def _evaluate(accelerator, model, loader, config: TrainConfig, label_names) -> dict:
    import torch

    model.eval()
    losses, predictions, references = [], [], []
    # MLM masks are random: fix them so "before" and "after" score the same masked tokens.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.seed)
        for batch in loader:
            outputs = model(**batch)
            count = batch["input_ids"].shape[0]
            losses.append(accelerator.gather_for_metrics(outputs.loss.detach().repeat(count)))
            if config.task == CLASSIFICATION:
                gathered = accelerator.gather_for_metrics((outputs.logits.argmax(-1), batch["labels"]))
                predictions += gathered[0].tolist()
                references += gathered[1].tolist()
    model.train()
    mean_loss = float(torch.cat(losses).mean()) if losses else float("nan")
    metrics = {"loss": mean_loss}
    if config.task == CLASSIFICATION:
        metrics.update(classification_metrics(references, predictions, label_names))
    else:
        metrics["perplexity"] = perplexity(mean_loss)
    return metrics


# ----- the loop -------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """Everything a run needs before its first step (train and time_steps share it)."""

    config: TrainConfig  # with epochs and batch size sized to the data
    model: Any
    tokenizer: Any
    optimizer: Any
    accelerator: Any
    train_loader: Any
    validation_loader: Any
    shuffle: Any  # the generator that orders each epoch
    precision: str
    untrained_head: bool
    sized: str


def _prepare(config: TrainConfig, data: TrainingData, warnings: list[str], batch_size: int | None = None,
             hardware: Hardware | None = None) -> _Prepared:
    """Load the tokenizer and model, choose the precision, tokenize, size the run to the data,
    and build the loaders and optimizer, prepared by Accelerate. `batch_size`: the loaders'
    batch instead of the run's (time_steps times a few small batches); `hardware`: what the
    precision is chosen for (this machine's unless given)."""
    import torch

    source, local_only = base_model_source(config.base_model, config.models_dir)
    try:
        tokenizer = load_tokenizer(source, local_only)
        model, untrained_head = load_base_model(config, source, local_only, data.label_names)
    except WorkbenchError:
        raise
    except Exception as error:
        raise WorkbenchError(f"Cannot load '{config.base_model}' for fine-tuning: {error}") from error
    if untrained_head:
        warnings.append(f"'{config.base_model}' has no trained {config.task} head: it starts from random weights, "
                        f"and its predictions may stay poor (the same top words for every text) after a short run.")
    precision, precision_note = choose_precision(config.precision, model, hardware or Hardware.detect())
    if precision_note:
        warnings.append(precision_note)
    accelerator = _accelerator(config, precision)
    if config.freeze_embeddings:
        # The word embeddings are often half of a small model's weights (MiniLM: 11.7M of 22.7M):
        # not updating them saves their gradients and optimizer state. Tied output layers
        # (language models) stay fixed with them.
        model.get_input_embeddings().weight.requires_grad_(False)
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers: pad with end-of-text
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    with accelerator.main_process_first():
        train_set, validation_set, collator = tokenize_data(config, data, tokenizer, model, warnings)
    if len(train_set) == 0 or len(validation_set) == 0:
        raise WorkbenchError("Not enough text to train on: add more data.")
    epochs, sized_batch, sized = size_to_data(config.task, len(train_set), config.epochs, config.batch_size,
                                              config.gradient_accumulation_steps, accelerator.num_processes)
    config = dataclasses.replace(config, epochs=epochs, batch_size=sized_batch)
    loading = dataclasses.replace(config, batch_size=batch_size) if batch_size else config
    train_loader, validation_loader, shuffle_generator = _loaders(loading, train_set, validation_set, collator)

    decayed = decayed_parameter_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    parameters = [{"params": [p for name, p in trainable if name in decayed], "weight_decay": config.weight_decay},
                  {"params": [p for name, p in trainable if name not in decayed], "weight_decay": 0.0}]
    # fused: one kernel for all parameters, also on CPU (what Trainer picks by default); for a small
    # model on a CPU the optimizer step is a large share of each step.
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, fused=True)
    model, optimizer, train_loader, validation_loader = accelerator.prepare(
        model, optimizer, train_loader, validation_loader)
    return _Prepared(config, model, tokenizer, optimizer, accelerator, train_loader, validation_loader,
                     shuffle_generator, precision, untrained_head, sized)


TIMING_BATCH = 4  # examples per timed step; a step of the run's batch is scaled from it


def time_steps(config: TrainConfig, steps: int = 2) -> dict:
    """Time a few real training steps of `config` on this machine, as the run would make them
    (same model, data, sequence lengths, precision, LoRA, frozen embeddings), saving nothing: one
    step to warm up, then `steps` timed ones of TIMING_BATCH examples, scaled to the run's batch
    and accumulation; and a few validation batches, scaled to the whole validation split.
    Returns {"seconds_per_step", "evaluation_seconds", "precision", "epochs", "batch_size",
    "timed_seconds"} (the last: how long this took after loading)."""
    import torch
    from accelerate.utils import set_seed

    from core.data import load_training_data

    set_seed(config.seed)
    data = load_training_data(config.task, config.train_file, config.validation_file, config.text_column,
                              config.label_column, config.validation_share, seed=config.seed)
    ready = _prepare(config, data, [], batch_size=TIMING_BATCH)
    started = time.monotonic()
    model, optimizer = ready.model, ready.optimizer
    model.train()
    batches, per_example = iter(ready.train_loader), []
    for number in range(steps + 1):
        batch = next(batches, None) or next(iter(ready.train_loader))
        began = time.monotonic()
        ready.accelerator.backward(model(**batch).loss)
        optimizer.step()
        optimizer.zero_grad()
        if number:  # the first step warms up (allocations, kernels chosen)
            per_example.append((time.monotonic() - began) / batch["input_ids"].shape[0])
    run = ready.config
    per_step = statistics.median(per_example) * run.batch_size * run.gradient_accumulation_steps
    model.eval()
    evaluated, began = 0, time.monotonic()
    with torch.no_grad():
        for number, batch in enumerate(ready.validation_loader):
            if number == 3:
                break
            model(**batch)
            evaluated += batch["input_ids"].shape[0]
    evaluation = (time.monotonic() - began) / max(evaluated, 1) * len(ready.validation_loader.dataset)
    return {"seconds_per_step": per_step, "evaluation_seconds": evaluation, "precision": ready.precision,
            "epochs": run.epochs, "batch_size": run.batch_size, "validation_examples": len(ready.validation_loader.dataset),
            "timed_seconds": time.monotonic() - started}


def train(config: TrainConfig, on_progress: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], bool] | None = None, data: TrainingData | None = None,
          hardware: Hardware | None = None) -> TrainResult:
    import torch
    import transformers
    from accelerate.utils import set_seed

    if (config.checkpoint_every or config.resume) and not config.checkpoint_dir:
        # Checked here, not in TrainConfig: the app's job runner chooses the folder itself.
        raise WorkbenchError("checkpoint_dir: give a folder for the checkpoints.")
    report = on_progress or (lambda progress: None)
    should_stop = should_stop or (lambda: False)
    warnings: list[str] = []
    set_seed(config.seed)
    if data is None:
        from core.data import load_training_data

        data = load_training_data(config.task, config.train_file, config.validation_file,
                                  config.text_column, config.label_column, config.validation_share,
                                  seed=config.seed)
    warnings += data.warnings
    ready = _prepare(config, data, warnings, hardware=hardware)
    config, model, tokenizer, optimizer, accelerator = (ready.config, ready.model, ready.tokenizer, ready.optimizer,
                                                        ready.accelerator)
    train_loader, validation_loader, shuffle_generator = ready.train_loader, ready.validation_loader, ready.shuffle
    precision, untrained_head, sized = ready.precision, ready.untrained_head, ready.sized
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    # The prepared scheduler steps once per process each optimizer step (as in the
    # run_*_no_trainer examples), so its horizon is scaled by the number of processes.
    processes = accelerator.num_processes
    scheduler = transformers.get_scheduler(
        "linear", optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps) * processes,
        num_training_steps=total_steps * processes)
    scheduler = accelerator.prepare(scheduler)
    _start_tracking(accelerator, config)

    def emit(progress: Progress) -> None:
        if accelerator.is_main_process:
            progress.warnings = list(warnings)
            report(progress)

    resumed = checkpoints.load_latest(accelerator, config.checkpoint_dir, total_steps) if config.resume else None
    if resumed:  # the "before" metrics are those of the base model, measured by the first run
        start_step, before = resumed
    else:
        start_step, before = 0, _evaluate(accelerator, model, validation_loader, config, data.label_names)
        _log_evaluation(accelerator, before, 0)
    emit(Progress("evaluating-before", start_step, total_steps, eval_metrics=before))

    step, stopped, started = start_step, False, time.monotonic()
    best = BestWeights(config)
    evaluated_at = None  # the step of the latest evaluation

    def evaluate_now() -> None:
        nonlocal evaluated_at
        metrics = _evaluate(accelerator, model, validation_loader, config, data.label_names)
        evaluated_at = step
        _log_evaluation(accelerator, metrics, step)
        emit(Progress("evaluating", step, total_steps, epoch=step / steps_per_epoch, eval_metrics=metrics))
        # keep_fp32_wrapper: unwrapping without it would take autocast off the model for the steps to come.
        best.offer(step, step / steps_per_epoch, metrics, accelerator.unwrap_model(model))

    samples_per_step = config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
    epoch = start_step // steps_per_epoch
    micro_losses = []  # the losses of the micro-batches accumulated into the coming step
    model.train()
    while step < total_steps and not stopped:
        # Each epoch's order depends only on the seed and the epoch, so a resumed run skips
        # exactly the batches the interrupted one had trained on.
        shuffle_generator.manual_seed(config.seed + epoch)
        done_in_epoch = (step % steps_per_epoch) * config.gradient_accumulation_steps
        batches = accelerator.skip_first_batches(train_loader, done_in_epoch) if done_in_epoch else train_loader
        epoch += 1
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss  # under autocast when mixed precision runs (Accelerate)
                micro_losses.append(loss.detach())
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), "mean")
            micro_losses.clear()
            elapsed, steps_now = time.monotonic() - started, step - start_step
            accelerator.log({"train/loss": float(step_loss), "train/learning_rate": scheduler.get_last_lr()[0]},
                            step=step)  # a no-op without a tracker
            emit(Progress("training", step, total_steps, epoch=step / steps_per_epoch, loss=float(step_loss),
                          learning_rate=scheduler.get_last_lr()[0],
                          samples_per_second=steps_now * samples_per_step / elapsed if elapsed else None,
                          eta_seconds=elapsed / steps_now * (total_steps - step)))
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                checkpoints.save_checkpoint(accelerator, config.checkpoint_dir, step, total_steps, before)
            epoch_done = step % steps_per_epoch == 0
            if epoch_done or step >= total_steps or (config.eval_steps and step % config.eval_steps == 0):
                evaluate_now()
                if best.patience_exhausted:
                    break
            if step >= total_steps:
                break
            if _all_agree(accelerator, should_stop()):
                stopped = True
                break
        if best.patience_exhausted:
            break

    if evaluated_at != step:  # stopped between two evaluations: measure what was trained
        emit(Progress("evaluating-after", step, total_steps))
        evaluate_now()
    best.restore_into(accelerator.unwrap_model(model))
    for tracker in accelerator.trackers:  # (end_training would also end the processes' group)
        tracker.finish()
    after = best.kept_metrics
    emit(Progress("evaluating-after", step, total_steps, eval_metrics=after))
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # a plain model, without autocast
    if config.lora and config.lora_save == "merged":
        unwrapped = unwrapped.merge_and_unload()
    result = TrainResult(before, after, stopped, step, total_steps, unwrapped, tokenizer, config,
                         data.source, data.label_names, warnings, resumed_from_step=start_step,
                         precision=precision, evaluations=best.evaluations, kept=best.kept_summary(),
                         early_stopped=best.patience_exhausted, untrained_head=untrained_head, sized=sized)
    if not stopped and config.output_dir and accelerator.is_main_process:
        emit(Progress("saving", step, total_steps))
        artifacts.save_model(result, config.output_dir)  # through the module: tests/faults replace it
        checkpoints.remove_checkpoints(config.checkpoint_dir)  # the saved model supersedes them
    emit(Progress("done", step, total_steps))
    return result


# Trainer.get_decay_parameter_names' patterns (transformers 5), applied with the same helper:
# importing transformers.trainer itself would add seconds to every job's start. A test checks
# that both choose the same weights.
NO_DECAY_NAME_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def decayed_parameter_names(model) -> set[str]:
    """The weights AdamW decays, as transformers' Trainer chooses them: not biases, not norm
    weights (LayerNorm layers, and names such as `input_layernorm`, `norm`, `ln_f`... of RMSNorm
    and LayerNorm alike)."""
    import torch
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [torch.nn.LayerNorm], NO_DECAY_NAME_PATTERNS))


class BestWeights:
    """The best evaluation of a run and a copy of its weights (in memory, on the CPU), as
    Trainer's `load_best_model_at_end`: classification is judged by macro-F1 (ties: the lower
    validation loss), language models by validation loss; `best_metric` chooses another. Also
    counts the evaluations since the last better one, for early stopping."""

    def __init__(self, config: TrainConfig) -> None:
        automatic = "macro_f1" if config.task == CLASSIFICATION else "loss"
        self.metric = automatic if config.best_metric == "auto" else config.best_metric
        self.patience = config.early_stopping_patience
        self.evaluations: list[dict] = []
        self._best: dict | None = None  # {"step", "epoch", "metrics"}
        self._weights: dict | None = None
        self._since_better = 0

    def _score(self, metrics: dict) -> tuple[float, float]:
        """Higher is better: (the metric, minus the loss) so ties go to the lower loss."""
        value = metrics[self.metric]
        return (-value if self.metric == "loss" else value), -metrics["loss"]

    def offer(self, step: int, epoch: float, metrics: dict, model) -> None:
        evaluation = {"step": step, "epoch": round(epoch, 3), "metrics": metrics}
        self.evaluations.append(evaluation)
        if self._best is not None and self._score(metrics) <= self._score(self._best["metrics"]):
            self._since_better += 1
            return
        self._best, self._since_better = evaluation, 0
        self._weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}

    @property
    def patience_exhausted(self) -> bool:
        return bool(self.patience) and self._since_better >= self.patience

    @property
    def kept_metrics(self) -> dict:
        return self._best["metrics"]

    def restore_into(self, model) -> None:
        """Put the best weights back, unless the model already has them (the last evaluation was best)."""
        if self._best is not self.evaluations[-1]:
            model.load_state_dict(self._weights)

    def kept_summary(self) -> dict:
        return {"step": self._best["step"], "epoch": self._best["epoch"], "metric": self.metric,
                "value": self._best["metrics"][self.metric], "evaluations": len(self.evaluations),
                "last": self._best is self.evaluations[-1]}


def _all_agree(accelerator, stop_here: bool) -> bool:
    """Whether any process was asked to stop: under torchrun every process must leave the loop
    at the same step, or the others would wait for it forever."""
    if accelerator.num_processes == 1:
        return stop_here
    import torch

    flag = torch.tensor([1.0 if stop_here else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, "max").item())


def _accelerator(config: TrainConfig, precision: str):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # cpu=True on machines without CUDA: under torchrun Accelerate then joins the processes
    # with gloo (MULTI_CPU) instead of running each as a separate single-process job.
    settings = dict(gradient_accumulation_steps=config.gradient_accumulation_steps,
                    mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision],
                    cpu=not torch.cuda.is_available()) | _tracker_settings(config)
    try:
        return Accelerator(**settings)
    except ValueError:
        # Accelerate keeps one precision per process and refuses another. A training process
        # runs one job, so this happens only where train() runs again in one process (a
        # notebook, the tests): the state is then reset, keeping the processes' setup.
        if not AcceleratorState._shared_state:
            raise
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(**settings)


_TRACKER_PACKAGES = {"trackio": "trackio", "tensorboard": "tensorboard"}


def _tracker_settings(config: TrainConfig) -> dict:
    """Accelerator's tracker settings for `config.report_to`, refusing a tracker not installed."""
    import importlib.util

    if config.report_to == "none":
        return {}
    package = _TRACKER_PACKAGES[config.report_to]
    if importlib.util.find_spec(package) is None:
        raise WorkbenchError(f"report_to={config.report_to}: the {package} package is not installed "
                             f"(`pip install {package}`).")
    if config.report_to == "trackio" and config.tracking_dir:
        os.environ["TRACKIO_DIR"] = str(config.tracking_dir)  # read by trackio when it starts
    return dict(log_with=[config.report_to], project_dir=config.tracking_dir or "runs")


def tracking_hint(config: TrainConfig) -> str:
    """How to open the dashboard a run logged to, for a person ("" when it logged nowhere)."""
    if config.report_to == "trackio":
        where = f"TRACKIO_DIR={config.tracking_dir} " if config.tracking_dir else ""
        return f"Logged to trackio: open it with `{where}trackio show --project {TRACKING_PROJECT}`."
    if config.report_to == "tensorboard":
        return f"Logged to TensorBoard: open it with `tensorboard --logdir {config.tracking_dir or 'runs'}`."
    return ""


def _start_tracking(accelerator, config: TrainConfig) -> None:
    if config.report_to == "none":
        return
    run_name = config.run_name or Path(config.output_dir or config.base_model).name
    hyperparameters = {key: value for key, value in dataclasses.asdict(config).items()
                       if isinstance(value, (bool, int, float, str)) and key not in ("tracking_dir", "run_name")}
    # TensorBoard: one sub-folder per run (the project name is the folder); trackio: runs in one project.
    project = TRACKING_PROJECT if config.report_to == "trackio" else f"{run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    accelerator.init_trackers(project, config=hyperparameters, init_kwargs={"trackio": {"name": run_name}})


def _log_evaluation(accelerator, metrics: dict, step: int) -> None:
    accelerator.log({f"eval/{name}": value for name, value in metrics.items() if isinstance(value, (int, float))},
                    step=step)  # a no-op without a tracker
