"""What a finished run leaves: the saved model folder (written whole, core/atomic.py), its
metrics and its model card."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

from core import atomic
from core.errors import WorkbenchError
from core.training.config import TrainResult


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
