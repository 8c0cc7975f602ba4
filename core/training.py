"""One Accelerate training loop for causal LM, sequence classification and masked LM.

Modelled on transformers' `examples/pytorch/*/run_*_no_trainer.py`: tokenise; `group_texts`
chunking for language models; dynamic padding with length-grouped batches for classification;
`get_scheduler`; AdamW with transformers' weight-decay groups (none on biases and norms);
gradient accumulation with `accelerator.accumulate`, clipping and Accelerate's mixed precision.
The loop knows nothing of the UI: it reports through `on_progress`,
checks `should_stop()` every step, and runs the same from the browser, the CLI and `torchrun`:
the web server's job runner starts this module's command line (`main`) as a process of its own
(core/jobs.py), which reports events and takes commands through core/control.py. The command
line's flags are TrainConfig's fields (HfArgumentParser), optionally read from a JSON file.

    config = TrainConfig(task="classification", base_model="tiny-bert", train_file="x.csv")
    result = train(config, on_progress=print, should_stop=lambda: False)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from core import atomic
from core import checkpoints
from core.data import CAUSAL_LM, CLASSIFICATION, MASKED_LM, TRAIN_TASKS, TrainingData
from core.errors import WorkbenchError, first_line, require_number
from core.limits import (MAX_BATCH_SIZE, MAX_EARLY_STOPPING_PATIENCE, MAX_EPOCHS, MAX_GRAD_NORM,
                         MAX_GRADIENT_ACCUMULATION, MAX_LENGTH, MAX_LORA_ALPHA, MAX_LORA_DROPOUT, MAX_LORA_RANK,
                         MAX_MLM_PROBABILITY, MAX_VALIDATION_SHARE, MAX_WARMUP_RATIO, MAX_WEIGHT_DECAY, MIN_LENGTH)
from core.metrics import classification_metrics, perplexity
from core.precision import Hardware, choose_precision
from core.run_plan import ROWS_PER_MAP_BATCH, block_size, size_to_data



Precision = Literal["auto", "fp32", "bf16", "fp16"]  # see choose_precision
PRECISIONS = get_args(Precision)
DEFAULT_LEARNING_RATE = 5e-5  # full fine-tuning (the run_*_no_trainer examples' default)
# Epochs and batch size by task (core.run_plan): left out, they are sized to the data when the
# data is read. A classifier trains 5 epochs in batches of 8, the best epoch kept: on 2,000 real
# short texts (bench/quality.py) that beat transformers.Trainer's defaults (3 epochs of 8) at
# each of three seeds, test macro-F1 0.717 against 0.708 on average, where 3 epochs of 16
# scored 0.688 (seed 42); a lead inside one run's noise, read on the test scores. It is the
# epochs that do it: Trainer given the same 5 epochs scores the same (0.719). A language model
# gets at least the optimizer steps a text needs to take on its style (bench/style_steps.py).
# LoRA adapters start at zero and are few: they need larger steps. A classifier's adapters and
# new head learned nothing from 30 sentences at 2e-4 in 6 epochs (validation accuracy 0.4) and
# did at 1e-3; a language model's adapters move its whole output, so they keep the usual 2e-4.
LORA_LEARNING_RATES = {CAUSAL_LM: 2e-4, CLASSIFICATION: 1e-3, MASKED_LM: 1e-3}
LoraSave = Literal["merged", "adapter"]  # see TrainConfig.lora_save
LORA_SAVES = get_args(LoraSave)
ReportTo = Literal["none", "trackio", "tensorboard"]  # Accelerate's trackers, see _tracker_settings
REPORT_TOS = get_args(ReportTo)
TRACKING_PROJECT = "model-workbench"  # the trackio project every run logs to
BestMetric = Literal["auto", "loss", "accuracy", "macro_f1"]  # auto: macro_f1 / loss, see BestWeights
BEST_METRICS = get_args(BestMetric)


@dataclass
class TrainConfig:
    # The metadata are the command line's (HfArgumentParser): short aliases and help texts.
    task: str = field(metadata={"choices": TRAIN_TASKS, "help": "what to fine-tune the model for"})
    base_model: str = field(metadata={"aliases": ["--model"],
                                      "help": "Hub id, a model folder's name in the models folder, or a folder path"})
    train_file: str | None = field(default=None, metadata={"aliases": ["--train"]})  # None: `data` given to train()
    validation_file: str | None = field(default=None, metadata={"aliases": ["--validation"]})
    text_column: str | None = None
    label_column: str | None = None
    # Saved there (atomically) on success; None: the caller saves.
    output_dir: str | None = field(default=None, metadata={"aliases": ["--output"]})
    models_dir: str | None = None  # where local base models are looked up
    epochs: float | None = None  # None: sized to the data (core.run_plan.size_to_data)
    learning_rate: float | None = None  # None: DEFAULT_LEARNING_RATE, or LORA_LEARNING_RATES with LoRA
    batch_size: int | None = None  # None: sized to the data, with the epochs
    gradient_accumulation_steps: int = 1
    max_length: int = 128  # truncation for classification, block size for language models
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # gradient clipping (as Trainer's default); 0: none
    seed: int = 42
    validation_share: float = 0.2
    mlm_probability: float = 0.15
    whole_word_masking: bool = False
    precision: Precision = "auto"  # mixed precision, see choose_precision
    # Evaluation: on the validation split at each epoch's end, and every `eval_steps` optimizer
    # steps if set; the weights of the best evaluation by `best_metric` are the ones kept.
    eval_steps: int = 0
    best_metric: BestMetric = "auto"
    early_stopping_patience: int = 0  # stop after this many evaluations without a better one; 0: never
    # LoRA adapters on the attention projections (a classifier's head trains in full). Target
    # modules: comma-separated names; empty: peft's choice for the architecture (query,value for
    # BERT; c_attn for GPT-2; q_proj,v_proj for Llama). Saved merged into the model's weights, or
    # as the adapter only (peft's files: a small download; the panels load its base with it).
    lora: bool = False
    lora_save: LoraSave = "merged"
    lora_rank: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = ""
    # Log the run to a local dashboard through Accelerate's trackers: trackio (in its own folder,
    # or `tracking_dir`; `trackio show` opens it) or TensorBoard (event files in `tracking_dir`,
    # default ./runs; `tensorboard --logdir`). `run_name` names the run there.
    report_to: ReportTo = "none"
    tracking_dir: str | None = None
    run_name: str | None = None
    freeze_embeddings: bool = False  # keep the input word embeddings fixed: fewer weights to update
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: none
    checkpoint_dir: str | None = None  # where checkpoints are written and resumed from
    resume: bool = False  # continue from the newest checkpoint in checkpoint_dir, if there is one

    def __post_init__(self) -> None:
        if self.task not in TRAIN_TASKS:
            raise WorkbenchError(f"task must be one of {', '.join(TRAIN_TASKS)} (got {self.task!r}).")
        if not self.base_model or not str(self.base_model).strip():
            raise WorkbenchError("base_model: choose a model to fine-tune.")
        if self.epochs is not None:  # None: sized to the data when it is read (core.run_plan)
            require_number(self.epochs, 0, MAX_EPOCHS, "epochs", low_open=True)
        if self.learning_rate is None:
            self.learning_rate = LORA_LEARNING_RATES[self.task] if self.lora else DEFAULT_LEARNING_RATE
        require_number(self.learning_rate, 0, 1, "learning_rate", low_open=True)
        require_number(self.lora_rank, 1, MAX_LORA_RANK, "lora_rank", integer=True)
        require_number(self.lora_alpha, 0, MAX_LORA_ALPHA, "lora_alpha", low_open=True)
        require_number(self.lora_dropout, 0, MAX_LORA_DROPOUT, "lora_dropout")
        self.lora_rank = int(self.lora_rank)
        if self.lora_save not in LORA_SAVES:
            raise WorkbenchError(f"lora_save must be one of {', '.join(LORA_SAVES)} (got {self.lora_save!r}).")
        if self.lora_save == "adapter" and not self.lora:
            raise WorkbenchError("lora_save: only a LoRA run has an adapter to save on its own (turn lora on).")
        if self.batch_size is not None:
            require_number(self.batch_size, 1, MAX_BATCH_SIZE, "batch_size", integer=True)
            self.batch_size = int(self.batch_size)
        require_number(self.gradient_accumulation_steps, 1, MAX_GRADIENT_ACCUMULATION, "gradient_accumulation_steps",
                       integer=True)
        require_number(self.max_length, MIN_LENGTH, MAX_LENGTH, "max_length", integer=True)
        require_number(self.warmup_ratio, 0, MAX_WARMUP_RATIO, "warmup_ratio")
        require_number(self.weight_decay, 0, MAX_WEIGHT_DECAY, "weight_decay")
        require_number(self.max_grad_norm, 0, MAX_GRAD_NORM, "max_grad_norm")
        if self.precision not in PRECISIONS:
            raise WorkbenchError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r}).")
        require_number(self.seed, 0, 2**32 - 1, "seed", integer=True)
        require_number(self.validation_share, 0, MAX_VALIDATION_SHARE, "validation_share", low_open=True)
        require_number(self.mlm_probability, 0, MAX_MLM_PROBABILITY, "mlm_probability", low_open=True)
        require_number(self.checkpoint_every, 0, 1_000_000, "checkpoint_every", integer=True)
        require_number(self.eval_steps, 0, 1_000_000, "eval_steps", integer=True)
        require_number(self.early_stopping_patience, 0, MAX_EARLY_STOPPING_PATIENCE, "early_stopping_patience",
                       integer=True)
        if self.report_to not in REPORT_TOS:
            raise WorkbenchError(f"report_to must be one of {', '.join(REPORT_TOS)} (got {self.report_to!r}).")
        if self.best_metric not in BEST_METRICS:
            raise WorkbenchError(f"best_metric must be one of {', '.join(BEST_METRICS)} (got {self.best_metric!r}).")
        if self.best_metric in ("accuracy", "macro_f1") and self.task != CLASSIFICATION:
            raise WorkbenchError(f"best_metric: {self.best_metric} is measured for classification only; a "
                                 f"language model is kept by its validation loss.")
        self.max_length, self.seed = int(self.max_length), int(self.seed)
        self.gradient_accumulation_steps = int(self.gradient_accumulation_steps)
        self.checkpoint_every = int(self.checkpoint_every)
        self.eval_steps, self.early_stopping_patience = int(self.eval_steps), int(self.early_stopping_patience)


@dataclass
class Progress:
    phase: str  # evaluating-before | training | evaluating-after | saving | done
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    learning_rate: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    eval_metrics: dict | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    metrics_before: dict
    metrics_after: dict
    stopped: bool
    steps_done: int
    total_steps: int
    model: Any
    tokenizer: Any
    config: TrainConfig
    data_source: str
    label_names: list[str] | None
    warnings: list[str]
    output_dir: str | None = None
    resumed_from_step: int = 0  # 0: trained from the start
    precision: str = "fp32"  # what ran: fp32, or bf16 / fp16 mixed precision
    evaluations: list[dict] = field(default_factory=list)  # {"step", "epoch", "metrics"} of each evaluation
    kept: dict | None = None  # the evaluation whose weights were kept: {"step", "epoch", "metric", "value"}
    early_stopped: bool = False  # ended by early stopping (a finished run, saved as usual)
    untrained_head: bool = False  # a language model's output head started from random weights
    sized: str = ""  # how epochs and batch size were sized to the data ("" when they were given)


# ----- loading --------------------------------------------------------------------------------
def base_model_source(name: str, models_dir: str | None = None) -> tuple[str, bool]:
    """Where to load a base model from: (folder or Hub id, local_files_only). Packaged models
    ("packaged:...") come from their PyPI package; other names go through the registry's checks."""
    from core.models import ModelRegistry
    from core.packaged import is_packaged_name, model_folder

    if is_packaged_name(name):
        return str(model_folder(name)), True
    return ModelRegistry(models_dir).source_for(name)  # (no models_dir: WORKBENCH_MODELS_DIR's)


def check_base_model(config: TrainConfig) -> None:
    """Refuse, before anything starts, a base model that cannot load (no such folder, a broken
    one, a Hub id with no Hub or no cache) or cannot learn the task (a masked LM's words from a
    decoder, text generation from an encoder)."""
    from core.models import TEXT_GENERATION, ModelRegistry

    base_model_source(config.base_model, config.models_dir)  # WorkbenchError saying why it cannot load
    known = ModelRegistry(config.models_dir).task_of(config.base_model)
    if config.task == CAUSAL_LM and known not in (None, TEXT_GENERATION):
        raise WorkbenchError(f"'{config.base_model}' is not a text-generation model: a causal LM is fine-tuned from "
                             f"one (the packaged SmolLM2, a GPT-2, or a model trained here as a causal LM).")
    if config.task == MASKED_LM and known == TEXT_GENERATION:
        raise WorkbenchError(f"'{config.base_model}' is a text-generation model, which has no mask token: a masked LM "
                             f"is fine-tuned from an encoder (a BERT or RoBERTa fill-mask model, or MiniLM).")


def _load_tokenizer(source: str, local_only: bool):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                                      trust_remote_code=False)


def base_tokenizer(name: str, models_dir: str | None):
    """The tokenizer of a base model (for the data preview's token-length statistics)."""
    return _load_tokenizer(*base_model_source(name, models_dir))


def base_context_length(name: str, tokenizer, models_dir: str | None) -> int:
    """How many tokens the base model reads at once (a language model's longest block)."""
    import transformers

    source, local_only = base_model_source(name, models_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    except Exception as error:  # a config that does not load: said like every other load failure
        raise WorkbenchError(f"Cannot read the config of '{name}': {first_line(error)[:300]}") from error
    return _context_length(config, tokenizer)


def _load_model(config: TrainConfig, source: str, local_only: bool, label_names: list[str] | None):
    """(the model to train, whether a language model's output head starts untrained)."""
    import torch
    import transformers

    from core.models import adapter_base, is_adapter_folder

    if local_only and is_adapter_folder(source):
        raise WorkbenchError(f"'{config.base_model}' is a LoRA adapter saved without its base's weights: fine-tune "
                             f"its base ('{adapter_base(source)[0]}') instead, or a model saved merged.")
    # float32 weights: the optimizer updates them in full precision (mixed precision runs as
    # autocast on top, see choose_precision). transformers would otherwise keep a bf16
    # checkpoint (SmolLM2) in bf16.
    common = dict(trust_remote_code=False, local_files_only=local_only, dtype=torch.float32,
                  use_safetensors=True if local_only else None)
    if config.task == CLASSIFICATION:
        base_config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=False,
                                                              local_files_only=local_only)
        old_head = getattr(base_config, "num_labels", None)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            # A checkpoint that already has a head of another size gets a fresh one.
            ignore_mismatched_sizes=old_head != len(label_names), **common)
        untrained_head = False  # a new classification head is the point of fine-tuning a classifier
    else:
        auto = transformers.AutoModelForCausalLM if config.task == CAUSAL_LM else transformers.AutoModelForMaskedLM
        model, loading = auto.from_pretrained(source, output_loading_info=True, **common)
        # Weights the checkpoint lacks start random: an encoder trained for embeddings has no
        # masked-LM head, and a few epochs on a small text do not teach it words.
        untrained_head = bool(loading["missing_keys"])
    return (_with_lora(model, config) if config.lora else model), untrained_head


_LORA_TASK_TYPES = {CAUSAL_LM: "CAUSAL_LM", CLASSIFICATION: "SEQ_CLS"}  # masked LM: peft has no task type


def _with_lora(model, config: TrainConfig):
    """The model with LoRA adapters (peft). For classification peft also trains the new head in
    full (`SEQ_CLS` keeps `classifier`/`score` trainable): it starts untrained."""
    from peft import LoraConfig, get_peft_model

    from transformers.pytorch_utils import Conv1D

    targets = [name.strip() for name in config.lora_target_modules.split(",") if name.strip()] or None
    # GPT-2 keeps its projections in Conv1D layers, whose weights are stored transposed.
    transposed = any(isinstance(module, Conv1D) for module in model.modules())
    settings = LoraConfig(task_type=_LORA_TASK_TYPES.get(config.task), r=config.lora_rank,
                          lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=targets, fan_in_fan_out=transposed)
    try:
        return get_peft_model(model, settings)
    except ValueError as error:  # target modules the model does not have, an unknown architecture
        asked = ", ".join(targets) if targets else "peft's defaults"
        raise WorkbenchError(f"lora_target_modules ({asked}) do not fit '{config.base_model}': "
                             f"{first_line(error)[:300]}") from error


# ----- data -----------------------------------------------------------------------------------
def _tokenize(config: TrainConfig, data: TrainingData, tokenizer, model, warnings: list[str]):
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
    block, lowered = block_size(config.max_length, _context_length(model.config, tokenizer), shortest)
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


def _context_length(model_config, tokenizer) -> int:
    limits = [getattr(model_config, name, None) for name in ("max_position_embeddings", "n_positions")]
    limits.append(tokenizer.model_max_length if tokenizer.model_max_length < 1e6 else None)
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else MAX_LENGTH


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


def _prepare(config: TrainConfig, data: TrainingData, warnings: list[str], batch_size: int | None = None) -> _Prepared:
    """Load the tokenizer and model, choose the precision, tokenize, size the run to the data,
    and build the loaders and optimizer, prepared by Accelerate. `batch_size`: the loaders'
    batch instead of the run's (time_steps times a few small batches)."""
    import torch

    source, local_only = base_model_source(config.base_model, config.models_dir)
    try:
        tokenizer = _load_tokenizer(source, local_only)
        model, untrained_head = _load_model(config, source, local_only, data.label_names)
    except WorkbenchError:
        raise
    except Exception as error:
        raise WorkbenchError(f"Cannot load '{config.base_model}' for fine-tuning: {error}") from error
    if untrained_head:
        warnings.append(f"'{config.base_model}' has no trained {config.task} head: it starts from random weights, "
                        f"and its predictions may stay poor (the same top words for every text) after a short run.")
    precision, precision_note = choose_precision(config.precision, model, Hardware.detect())
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
        train_set, validation_set, collator = _tokenize(config, data, tokenizer, model, warnings)
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
          should_stop: Callable[[], bool] | None = None, data: TrainingData | None = None) -> TrainResult:
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
    ready = _prepare(config, data, warnings)
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
        save_model(result, config.output_dir)
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


# ----- saving ---------------------------------------------------------------------------------
def save_model(result: TrainResult, output_dir: str | Path) -> Path:
    """Write the model into a hidden temporary folder next to `output_dir`, then rename it into
    place: the models folder never holds a half-written model (the registry skips dot-folders)."""
    target = Path(output_dir)
    if target.exists():
        raise WorkbenchError(f"A model named '{target.name}' already exists: choose another name.")
    with atomic.written_folder(target, "saving") as temporary:
        result.model.save_pretrained(temporary, safe_serialization=True)
        if is_adapter(result.model):
            # The base's config (labels included) beside peft's adapter files: the folder lists
            # under its task, and the panels rebuild the model from the base (core.models).
            base = result.model.get_base_model()
            config = copy.deepcopy(base.config)
            config.architectures = [type(base).__name__]  # what save_pretrained would write for the model
            config.save_pretrained(temporary)
        result.tokenizer.save_pretrained(temporary)
        metrics = {"base_model": result.config.base_model, "adapter_only": is_adapter(result.model),
                   "before": result.metrics_before, "after": result.metrics_after,
                   "steps": result.steps_done, "total_steps": result.total_steps, "stopped": result.stopped,
                   "resumed_from_step": result.resumed_from_step, "precision": result.precision,
                   "kept": result.kept, "early_stopped": result.early_stopped, "evaluations": result.evaluations,
                   "untrained_head": result.untrained_head}
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (temporary / "README.md").write_text(_model_card(result), encoding="utf-8")
    result.output_dir = str(target)
    return target


def is_adapter(model) -> bool:
    """A peft model kept with its adapter apart (lora_save="adapter")."""
    if "peft" not in sys.modules:  # only LoRA runs import peft
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def kept_sentence(kept: dict) -> str:
    """Which weights were kept and why, for a person."""
    where = f"epoch {kept['epoch']:g} (step {kept['step']})"
    which = f"the last weights, {where}" if kept["last"] else f"the weights of {where}"
    return (f"Kept {which}: the best validation {kept['metric']} ({kept['value']:.4f}) of "
            f"{kept['evaluations']} evaluations.")


def _model_card(result: TrainResult) -> str:
    config = result.config
    hyper = {key: value for key, value in dataclasses.asdict(config).items()
             if key not in ("train_file", "validation_file", "output_dir", "models_dir", "checkpoint_dir",
                            "resume")}
    rows = []
    for name in ("loss", "perplexity", "accuracy", "macro_f1"):
        if name in result.metrics_after:
            rows.append(f"| {name} | {result.metrics_before.get(name, float('nan')):.4f} | "
                        f"{result.metrics_after[name]:.4f} |")
    status = (f"Stopped early after {result.steps_done} of {result.total_steps} steps."
              if result.stopped else f"Trained for {result.steps_done} steps.")
    if result.resumed_from_step:
        status += f" Resumed from a checkpoint at step {result.resumed_from_step}."
    if result.early_stopped:
        status += (f" Early stopping ended it: {result.kept['metric']} had not improved for "
                   f"{config.early_stopping_patience} evaluations.")
    if result.kept:
        status += " " + kept_sentence(result.kept)
    labels = f"\nLabels: {', '.join(result.label_names)}\n" if result.label_names else ""
    if is_adapter(result.model):
        status += (f" Saved as a LoRA adapter only: load it together with its base model `{config.base_model}` "
                   f"(peft's `PeftModel.from_pretrained`); Model Workbench's panels do that for you.")
    return (f"# Fine-tuned {config.task} model\n\nFine-tuned with Model Workbench from base model "
            f"`{config.base_model}`.\n\nData: {result.data_source}\n{labels}\n{status}\n\n"
            f"## Metrics on the validation split\n\n| metric | before | after |\n| --- | --- | --- |\n"
            + "\n".join(rows) + "\n\n## Hyperparameters\n\n```json\n" + json.dumps(hyper, indent=2) + "\n```\n")


# ----- command line ---------------------------------------------------------------------------
@dataclass
class ProcessOptions:
    """How the app's job runner drives a training process (core/control.py), not what it trains."""

    report_json: bool = field(default=False, metadata={"help": "print progress as event lines"})
    control_dir: str | None = field(default=None,
                                    metadata={"help": "folder where a stop request and save commands arrive"})
    time_steps: int = field(default=0, metadata={
        "help": "instead of training, time this many steps on this machine and report them (nothing is saved)"})
    hold_until_saved: bool = field(default=False, metadata={
        "help": "after a stop or a failed save, keep the model until the control folder says where to save it, "
                "or to discard it"})


def _parse_args(argv: list[str] | None) -> tuple[TrainConfig, ProcessOptions]:
    """The flags are TrainConfig's and ProcessOptions' fields (`--learning-rate 3e-5`, `--lora`,
    `--precision bf16`); `--config file.json` gives TrainConfig fields, and flags override it."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    known, rest = first.parse_known_args(argv)
    from_file = []
    if known.config:
        try:
            values = json.loads(Path(known.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise WorkbenchError(f"--config {known.config}: {error}") from error
        # The file's settings go first as flags, so the flags given after them win (argparse
        # keeps the last value) and both get the same checks.
        for key, value in values.items():
            if value is not None:
                from_file += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    parser = HfArgumentParser((TrainConfig, ProcessOptions),
                              description="Fine-tune a model headless (same loop as the app).")
    parser.add_argument("--config", help="JSON file of TrainConfig fields; flags override it")
    config, options, _ = parser.parse_args_into_dataclasses(args=from_file + rest, look_for_args_file=False)
    return TrainConfig(**_base_folder_as_models_dir(dataclasses.asdict(config))), options


def _base_folder_as_models_dir(values: dict) -> dict:
    """On the command line `--model` may also be a folder path (`./out/my-model`): it is then
    looked up as a model folder inside its parent folder, with the checks every local model
    gets (config.json, safetensors weights). The web UI keeps to the models folder."""
    name = str(values.get("base_model") or "")
    looks_like_path = os.sep in name or name.startswith((".", "~"))
    folder = Path(name).expanduser()
    if not (looks_like_path and folder.is_dir()):
        return values
    from core.models import is_valid_local_name

    folder = folder.resolve()
    if not is_valid_local_name(folder.name):
        raise WorkbenchError(f"--model {name}: the folder name may hold letters, digits, '.', '_' and '-' only "
                             f"(starting with a letter or digit): rename the folder.")
    return {**values, "base_model": folder.name, "models_dir": str(folder.parent)}


def _print_progress(progress: Progress) -> None:
    if progress.phase == "training":
        print(f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f} "
              f"lr {progress.learning_rate:.2e}", flush=True)
    elif progress.eval_metrics:
        if progress.phase == "evaluating-before" and progress.step:
            print(f"resumed from the checkpoint at step {progress.step}", flush=True)
        print(f"{progress.phase}: loss {progress.eval_metrics['loss']:.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Train as the flags say. Exit codes: 0 done (saved, or stopped and nothing asked), 1 a bug
    or a library failure, 2 a problem for the person (bad settings, data, model), 3 the process
    that started this one went away."""
    from core import control

    try:
        config, options = _parse_args(argv)
    except WorkbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    events = options.report_json
    folder = control.ControlFolder(options.control_dir) if options.control_dir else None
    stop = control.StopRequest(folder)

    def emit(kind: str, **fields) -> None:
        if events:
            print(control.event_line(kind, **fields), flush=True)

    if options.time_steps:
        try:
            timing = time_steps(config, options.time_steps)
        except WorkbenchError as error:
            emit("failed", reason=str(error))
            print(f"error: {error}", file=sys.stderr)
            return 2
        if events:
            emit("timing", **timing)
        else:
            print(json.dumps(timing), flush=True)
        return 0
    report = (lambda progress: emit("progress", **dataclasses.asdict(progress))) if events else _print_progress
    hold = options.hold_until_saved
    try:
        # Held: this process saves it below, so that a failed save keeps the trained model.
        result = train(dataclasses.replace(config, output_dir=None) if hold else config, on_progress=report,
                       should_stop=stop)
    except WorkbenchError as error:
        emit("failed", reason=str(error))
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        emit("failed", reason=f"Training failed: {type(error).__name__}: {error}")
        raise
    from accelerate import PartialState

    if stop.orphaned:
        return 3  # nobody is left to save it for; a checkpoint, if any, can resume it
    if not PartialState().is_main_process:
        return 0
    summary = {"metrics_before": result.metrics_before, "metrics_after": result.metrics_after,
               "output_dir": result.output_dir, "steps": result.steps_done,
               "resumed_from_step": result.resumed_from_step}
    if not events:
        print(json.dumps(summary), flush=True)
    emit("trained", stopped=result.stopped, total_steps=result.total_steps, warnings=result.warnings,
         data_source=result.data_source, epochs=result.config.epochs, batch_size=result.config.batch_size,
         sized=result.sized,
         precision=result.precision, kept=result.kept, early_stopped=result.early_stopped, **summary)
    if hold:
        return control.hold_until_saved(lambda target: save_model(result, target),
                                        None if result.stopped else config.output_dir, folder, emit, stop,
                                        on_saved=lambda: checkpoints.remove_checkpoints(config.checkpoint_dir))
    return 0


if __name__ == "__main__":
    # `python -m core.training` runs this file as `__main__`, a second copy beside the
    # `core.training` that other modules import. Run the imported one's main, so that there is
    # one copy of each function and class in the process (what a test's injected fault patches).
    from core.training import main as imported_main

    sys.exit(imported_main())
