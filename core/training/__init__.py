"""Fine-tuning: one Accelerate training loop for causal LM, sequence classification and masked LM,
run the same from the browser (as a child process of the server), the command line and torchrun.

- `config.py`: TrainConfig (every setting, default and check), Progress, TrainResult.
- `loading.py`: the base model, its tokenizer and context length, a new head, LoRA.
- `loop.py`: tokenising, the loop, evaluation and the best weights, trackers.
- `artifacts.py`: the saved model folder (written whole), its metrics and model card.
- `cli.py`: `python -m core.training`, driven by the server's job runner (core/jobs/) through
  core/control.py.

    config = TrainConfig(task="classification", base_model="tiny-bert", train_file="x.csv")
    result = train(config, on_progress=print, should_stop=lambda: False)
"""

from core.training.artifacts import is_adapter, kept_sentence, save_model
from core.training.cli import main, parse_args
from core.training.config import (DEFAULT_LEARNING_RATE, LORA_LEARNING_RATES, TRACKING_PROJECT, Progress,
                                  TrainConfig, TrainResult)
from core.training.loading import base_context_length, base_model_source, base_tokenizer, check_base_model
from core.training.loop import BestWeights, decayed_parameter_names, time_steps, tokenize_data, tracking_hint, train

__all__ = ["DEFAULT_LEARNING_RATE", "LORA_LEARNING_RATES", "TRACKING_PROJECT", "BestWeights", "Progress", "TrainConfig",
           "TrainResult", "base_context_length", "base_model_source", "base_tokenizer", "check_base_model",
           "decayed_parameter_names", "is_adapter", "kept_sentence", "main", "parse_args", "save_model", "time_steps",
           "tokenize_data", "tracking_hint", "train"]
