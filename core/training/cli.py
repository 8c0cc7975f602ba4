"""The command line of a training run: `python -m core.training`. Its flags are TrainConfig's
fields (HfArgumentParser), optionally read from a JSON file. The web server's job runner starts
it as a process of its own (core/jobs/), which reports events and takes commands through
core/control.py."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core import checkpoints
from core.errors import WorkbenchError
from core.settings import command_line_field
from core.training import artifacts
from core.training.config import Progress, TrainConfig
from core.training.loop import time_steps, train


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


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, ProcessOptions]:
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
    class Parser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):  # TrainConfig's settings carry a form description
            HfArgumentParser._parse_dataclass_field(parser, command_line_field(field))

    parser = Parser((TrainConfig, ProcessOptions), prog="python -m core.training",
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
        config, options = parse_args(argv)
    except WorkbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    events = options.report_json
    folder = control.ControlFolder(options.control_dir) if options.control_dir else None
    stop = control.StopRequest(folder)

    def emit(kind: str, **fields) -> None:
        if events:
            print(control.event_line(kind, **fields), flush=True)

    import torch

    emit("started", threads=torch.get_num_threads())

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
        # Through the module, so that a test's injected fault (tests/faults) can replace it.
        return control.hold_until_saved(lambda target: artifacts.save_model(result, target),
                                        None if result.stopped else config.output_dir, folder, emit, stop,
                                        on_saved=lambda: checkpoints.remove_checkpoints(config.checkpoint_dir))
    return 0
