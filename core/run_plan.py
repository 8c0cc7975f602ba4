"""What a fine-tuning run will be before it starts: how many examples (rows, or blocks of
tokens for a language model), epochs, batch size, optimizer steps, and how long it takes on
this machine, from a few real steps timed here (core.training.time_steps).

Epochs and batch size left out (None) are sized to the data. A classifier keeps its measured
defaults (5 epochs of 8, bench/quality.py). A language model needs a number of optimizer steps
to take on the style of a text whatever its size: 3 epochs of 16 gave an 11 KB file 3 steps,
which changed nothing (bench/style_steps.py measured how many are enough), so a small text
gets smaller batches and more epochs until it reaches LM_TARGET_STEPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from core.data import CAUSAL_LM, CLASSIFICATION, MASKED_LM
from core.limits import LONG_RUN_SECONDS, MAX_EPOCHS, MIN_LENGTH

DEFAULT_EPOCHS = {CAUSAL_LM: 3, CLASSIFICATION: 5, MASKED_LM: 3}
DEFAULT_BATCH_SIZES = {CAUSAL_LM: 16, CLASSIFICATION: 8, MASKED_LM: 16}
# Optimizer steps a language model gets when its epochs and batch size are sized to the data (a
# text of a handful of blocks gets fewer: MAX_EPOCHS at the most): bench/style_steps.py fine-tuned SmolLM2 on ~10 KB texts for 3 to 80 steps; validation
# perplexity came within 10% of its best at this many (see bench/RESULTS.md).
LM_TARGET_STEPS = 40
SMALLEST_SIZED_BATCH = 4  # batches of 1 or 2 make noisy steps; a small text gets more epochs instead
ROWS_PER_MAP_BATCH = 1000  # datasets.map's batch: language-model blocks are cut within each (core.training)


@dataclass
class RunPlan:
    task: str
    examples: int  # training rows (classification) or blocks of tokens (language models)
    validation_examples: int
    tokens_per_example: int  # a block's size, or a classification row's mean length (cut at max_length)
    epochs: float
    batch_size: int
    accumulation: int
    steps_per_epoch: int
    total_steps: int
    sized: str = ""  # how epochs and batch size were sized to the data ("" when they were given)
    warnings: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return "rows" if self.task == CLASSIFICATION else f"blocks of {self.tokens_per_example} tokens"


def steps_per_epoch(examples: int, batch_size: int, accumulation: int = 1, processes: int = 1) -> int:
    """Optimizer steps in one epoch, as the loop makes them: batches of the examples (each of
    several processes takes its share of them, as Accelerate shards the loader), accumulated."""
    return math.ceil(math.ceil(math.ceil(examples / batch_size) / processes) / accumulation)


def total_steps(examples: int, epochs: float, batch_size: int, accumulation: int = 1, processes: int = 1) -> int:
    return max(1, math.ceil(epochs * steps_per_epoch(examples, batch_size, accumulation, processes)))


def size_to_data(task: str, examples: int, epochs: float | None, batch_size: int | None,
                 accumulation: int = 1, processes: int = 1) -> tuple[float, int, str]:
    """(epochs, batch size, how they were sized: "" when both were given)."""
    if epochs is not None and batch_size is not None:
        return epochs, batch_size, ""
    if task == CLASSIFICATION or examples < 1:  # no examples: the loop refuses the run anyway
        chosen_epochs = DEFAULT_EPOCHS[task] if epochs is None else epochs
        chosen_batch = DEFAULT_BATCH_SIZES[task] if batch_size is None else batch_size
        return chosen_epochs, chosen_batch, (f"{chosen_epochs:g} epochs of {chosen_batch}: the classification "
                                             f"defaults, measured on real texts (bench/quality.py)"
                                             if task == CLASSIFICATION else "")

    def steps(epochs_tried: float, size: int) -> int:
        return total_steps(examples, epochs_tried, size, accumulation, processes)

    default_epochs = DEFAULT_EPOCHS[task] if epochs is None else epochs
    candidates = [batch_size] if batch_size is not None else [
        size for size in (16, 8, SMALLEST_SIZED_BATCH) if size <= DEFAULT_BATCH_SIZES[task]]
    for size in candidates:
        if steps(default_epochs, size) >= LM_TARGET_STEPS:
            return default_epochs, size, (f"{default_epochs:g} epochs of {size}: {steps(default_epochs, size)} steps, "
                                          f"at least the {LM_TARGET_STEPS} a text needs to take on its style")
    size = candidates[-1] if batch_size is not None else max(1, min(SMALLEST_SIZED_BATCH, examples))
    if epochs is not None:
        return epochs, size, f"batches of {size}, the smallest sized batch, for a small text"
    needed = min(MAX_EPOCHS, math.ceil(LM_TARGET_STEPS / steps_per_epoch(examples, size, accumulation, processes)))
    reached = steps(needed, size)
    short = "" if reached >= LM_TARGET_STEPS else f"; {MAX_EPOCHS} epochs at the most, so fewer for so little text"
    return needed, size, (f"{needed} epochs of {size}: a small text, read {needed} times to make {reached} steps "
                          f"(a text needs about {LM_TARGET_STEPS} to take on its style{short})")


def block_size(max_length: int, context_length: int, shortest_tokens: int) -> tuple[int, str | None]:
    """A language model's block: max_length, within the model's context, lowered for a text
    shorter than one block (with the warning that says so). The loop and the plan both use it."""
    block = min(max_length, context_length)
    if shortest_tokens >= block:
        return block, None
    lowered = max(MIN_LENGTH, shortest_tokens)
    return lowered, f"The text is shorter than one block of {block} tokens: the block size was lowered to {lowered}."


def count_examples(config, data, tokenizer, context_length: int) -> tuple[int, int, int, list[str]]:
    """(training examples, validation examples, tokens per example, warnings) as the training
    loop will make them: rows for a classifier; for a language model, the blocks core.training
    cuts (each text ends with a line break; the remainder of every ROWS_PER_MAP_BATCH rows is
    dropped, as its map runs in batches of that many)."""
    if config.task == CLASSIFICATION:
        lengths = [len(ids) for ids in tokenizer(data.train[:]["text"], truncation=True,
                                                 max_length=config.max_length)["input_ids"]]
        return len(data.train), len(data.validation), round(sum(lengths) / len(lengths)), []
    per_split = [[len(ids) for ids in tokenizer([text + "\n" for text in split[:]["text"]], verbose=False)["input_ids"]]
                 for split in (data.train, data.validation)]
    block, warning = block_size(config.max_length, context_length, min(sum(lengths) for lengths in per_split))
    blocks = [sum(sum(lengths[start:start + ROWS_PER_MAP_BATCH]) // block
                  for start in range(0, len(lengths), ROWS_PER_MAP_BATCH)) for lengths in per_split]
    return blocks[0], blocks[1], block, [warning] if warning else []


def plan_run(config, data, tokenizer, context_length: int, processes: int = 1) -> RunPlan:
    """The run `config` makes of `data` on `processes` training processes (see the module)."""
    from core.errors import WorkbenchError

    examples, validation, tokens, warnings = count_examples(config, data, tokenizer, context_length)
    if not examples or not validation:
        raise WorkbenchError("Not enough text to train on: add more data.")  # as the loop says
    epochs, batch, sized = size_to_data(config.task, examples, config.epochs, config.batch_size,
                                        config.gradient_accumulation_steps, processes)
    accumulation = config.gradient_accumulation_steps
    return RunPlan(config.task, examples, validation, tokens, epochs, batch, accumulation,
                   steps_per_epoch(examples, batch, accumulation, processes),
                   total_steps(examples, epochs, batch, accumulation, processes), sized, warnings)


@dataclass
class StepTiming:
    """A few real training steps timed on this machine (core.training.time_steps)."""

    seconds_per_step: float  # one optimizer step of the run's batch size
    load_seconds: float  # starting the process and loading the model and data
    evaluation_seconds: float  # one pass over the validation examples
    precision: str


def estimate_seconds(plan: RunPlan, timing: StepTiming) -> float:
    """The whole run: loading, the evaluation before training and after each epoch, the steps."""
    evaluations = 1 + max(1, math.ceil(plan.epochs))
    return timing.load_seconds + evaluations * timing.evaluation_seconds + plan.total_steps * timing.seconds_per_step


def shorter_runs(plan: RunPlan, timing: StepTiming, config) -> list[str]:
    """Settings that would shorten a long run, each with its estimate where it can be computed."""
    options = []
    if plan.epochs > 1:
        fewer = max(1, math.floor(plan.epochs / 2))
        shorter = replace(plan, epochs=fewer, total_steps=math.ceil(fewer * plan.steps_per_epoch))
        options.append(f"{fewer:g} epochs instead of {plan.epochs:g} (about {duration(estimate_seconds(shorter, timing))})")
    if plan.task == CLASSIFICATION and plan.tokens_per_example * 2 < config.max_length:
        options.append(f"a max length of {max(MIN_LENGTH, 2 ** math.ceil(math.log2(plan.tokens_per_example * 2)))} "
                       f"tokens instead of {config.max_length} (the rows average {plan.tokens_per_example})")
    if not config.lora:
        options.append("LoRA adapters (fewer weights to update)")
    if not config.freeze_embeddings:
        options.append("frozen word embeddings")
    options.append("a sample of the data")
    return options


def duration(seconds: float) -> str:
    """A time a person reads at a glance: 45 s, 12 min, 1.5 h."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def describe_estimate(plan: RunPlan, timing: StepTiming | None, config) -> tuple[str, list[str]]:
    """(a sentence on the time the run takes here, warnings when it is long)."""
    if timing is None:
        return "", []
    total = estimate_seconds(plan, timing)
    precision = {"fp32": "float32", "bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision"}.get(
        timing.precision, timing.precision)
    sentence = (f"Estimated time on this machine: about {duration(total)} ({timing.seconds_per_step:.2f} s per step, "
                f"timed on a few real steps in {precision} just now).")
    if total <= LONG_RUN_SECONDS:
        return sentence, []
    return sentence, [f"This run is long: about {duration(total)} here. Shorter: " + "; ".join(shorter_runs(plan, timing, config))
                      + "."]


