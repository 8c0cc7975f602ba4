"""What a training run is: TrainConfig (every setting, its default and its check), the progress
it reports and the result it hands back. The Fine-tune tab, its API and the command line are
made from TrainConfig's fields: each declares its default, label and range once (core/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from core.data import CAUSAL_LM, CLASSIFICATION, MASKED_LM, TRAIN_TASKS
from core.errors import WorkbenchError
from core.limits import (MAX_BATCH_SIZE, MAX_EARLY_STOPPING_PATIENCE, MAX_EPOCHS, MAX_GRAD_NORM,
                         MAX_GRADIENT_ACCUMULATION, MAX_LENGTH, MAX_LORA_ALPHA, MAX_LORA_DROPOUT, MAX_LORA_RANK,
                         MAX_MLM_PROBABILITY, MAX_VALIDATION_SHARE, MAX_WARMUP_RATIO, MAX_WEIGHT_DECAY, MIN_LENGTH)
from core.settings import check_ranges, setting


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
    # None: sized to the data (core.run_plan.size_to_data), the batch size with them.
    epochs: float | None = setting(None, "Epochs", 0, MAX_EPOCHS, low_open=True)
    # None: DEFAULT_LEARNING_RATE, or LORA_LEARNING_RATES with LoRA.
    learning_rate: float | None = setting(None, "Learning rate", 0, 1, low_open=True)
    batch_size: int | None = setting(None, "Batch size", 1, MAX_BATCH_SIZE, whole=True)
    gradient_accumulation_steps: int = setting(1, "Gradient accumulation steps", 1, MAX_GRADIENT_ACCUMULATION,
                                               step=1, whole=True)
    # Truncation for classification, block size for language models.
    max_length: int = setting(128, "Max length / block size (tokens)", MIN_LENGTH, MAX_LENGTH, step=8, whole=True)
    warmup_ratio: float = setting(0.1, "Warmup (share of steps)", 0, MAX_WARMUP_RATIO, step=0.05)
    weight_decay: float = setting(0.01, "Weight decay", 0, MAX_WEIGHT_DECAY, step=0.01)
    # Gradient clipping (as Trainer's default); 0: none.
    max_grad_norm: float = setting(1.0, "Gradient clipping norm", 0, MAX_GRAD_NORM)
    seed: int = setting(42, "Seed", 0, 2**32 - 1, whole=True)
    validation_share: float = setting(0.2, "Validation share", 0.05, MAX_VALIDATION_SHARE, step=0.05)
    mlm_probability: float = setting(0.15, "Masking probability", 0.05, MAX_MLM_PROBABILITY, step=0.05)
    whole_word_masking: bool = False
    precision: Precision = "auto"  # mixed precision, see choose_precision
    # Evaluation: on the validation split at each epoch's end, and every `eval_steps` optimizer
    # steps if set; the weights of the best evaluation by `best_metric` are the ones kept.
    eval_steps: int = setting(0, "Also evaluate every N steps", 0, 1_000_000, whole=True)
    best_metric: BestMetric = "auto"
    # Stop after this many evaluations without a better one; 0: never.
    early_stopping_patience: int = setting(0, "Early stopping patience", 0, MAX_EARLY_STOPPING_PATIENCE, whole=True)
    # LoRA adapters on the attention projections (a classifier's head trains in full). Target
    # modules: comma-separated names; empty: peft's choice for the architecture (query,value for
    # BERT; c_attn for GPT-2; q_proj,v_proj for Llama). Saved merged into the model's weights, or
    # as the adapter only (peft's files: a small download; the panels load its base with it).
    lora: bool = False
    lora_save: LoraSave = "merged"
    lora_rank: int = setting(8, "LoRA rank", 1, MAX_LORA_RANK, step=1, whole=True)
    lora_alpha: float = setting(16, "LoRA alpha", 1, MAX_LORA_ALPHA, step=1)
    lora_dropout: float = setting(0.05, "LoRA dropout", 0, MAX_LORA_DROPOUT, step=0.01)
    lora_target_modules: str = ""
    # Log the run to a local dashboard through Accelerate's trackers: trackio (in its own folder,
    # or `tracking_dir`; `trackio show` opens it) or TensorBoard (event files in `tracking_dir`,
    # default ./runs; `tensorboard --logdir`). `run_name` names the run there.
    report_to: ReportTo = "none"
    tracking_dir: str | None = None
    run_name: str | None = None
    freeze_embeddings: bool = False  # keep the input word embeddings fixed: fewer weights to update
    # Optimizer steps between checkpoints; 0: none.
    checkpoint_every: int = setting(0, "Checkpoint every N steps", 0, 1_000_000, whole=True)
    checkpoint_dir: str | None = None  # where checkpoints are written and resumed from
    resume: bool = False  # continue from the newest checkpoint in checkpoint_dir, if there is one

    def __post_init__(self) -> None:
        if self.task not in TRAIN_TASKS:
            raise WorkbenchError(f"task must be one of {', '.join(TRAIN_TASKS)} (got {self.task!r}).")
        if not self.base_model or not str(self.base_model).strip():
            raise WorkbenchError("base_model: choose a model to fine-tune.")
        if self.learning_rate is None:
            self.learning_rate = LORA_LEARNING_RATES[self.task] if self.lora else DEFAULT_LEARNING_RATE
        check_ranges(self)  # every field declared with a range (None: sized to the data later)
        if self.lora_save not in LORA_SAVES:
            raise WorkbenchError(f"lora_save must be one of {', '.join(LORA_SAVES)} (got {self.lora_save!r}).")
        if self.lora_save == "adapter" and not self.lora:
            raise WorkbenchError("lora_save: only a LoRA run has an adapter to save on its own (turn lora on).")
        if self.precision not in PRECISIONS:
            raise WorkbenchError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r}).")
        if self.report_to not in REPORT_TOS:
            raise WorkbenchError(f"report_to must be one of {', '.join(REPORT_TOS)} (got {self.report_to!r}).")
        if self.best_metric not in BEST_METRICS:
            raise WorkbenchError(f"best_metric must be one of {', '.join(BEST_METRICS)} (got {self.best_metric!r}).")
        if self.best_metric in ("accuracy", "macro_f1") and self.task != CLASSIFICATION:
            raise WorkbenchError(f"best_metric: {self.best_metric} is measured for classification only; a "
                                 f"language model is kept by its validation loss.")


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
