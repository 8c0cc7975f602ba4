"""Loading what a run starts from: the base model (a packaged model, a local folder or a Hub id),
its tokenizer and context length, with a new head where the task needs one, and LoRA adapters."""

from __future__ import annotations


from core.data import CAUSAL_LM, CLASSIFICATION, MASKED_LM
from core.errors import WorkbenchError, first_line
from core.limits import MAX_LENGTH
from core.training.config import TrainConfig


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


def load_tokenizer(source: str, local_only: bool):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                                      trust_remote_code=False)


def base_tokenizer(name: str, models_dir: str | None):
    """The tokenizer of a base model (for the data preview's token-length statistics)."""
    return load_tokenizer(*base_model_source(name, models_dir))


def base_context_length(name: str, tokenizer, models_dir: str | None) -> int:
    """How many tokens the base model reads at once (a language model's longest block)."""
    import transformers

    source, local_only = base_model_source(name, models_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    except Exception as error:  # a config that does not load: said like every other load failure
        raise WorkbenchError(f"Cannot read the config of '{name}': {first_line(error)[:300]}") from error
    return context_length(config, tokenizer)


def load_base_model(config: TrainConfig, source: str, local_only: bool, label_names: list[str] | None):
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


def context_length(model_config, tokenizer) -> int:
    limits = [getattr(model_config, name, None) for name in ("max_position_embeddings", "n_positions")]
    limits.append(tokenizer.model_max_length if tokenizer.model_max_length < 1e6 else None)
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else MAX_LENGTH
