"""Renaming and deleting models in the models folder, never outside it, never a model in use.

A model is refused when the training job saves to it or fine-tunes it, or when a LoRA adapter
in the folder is built on it (the adapter would stop loading). Deleting first renames the folder
to a hidden name (no picker lists it from that instant), then removes it; the run history and
the registry's loaded models follow both changes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from core import atomic
from core.errors import WorkbenchError
from core.models import ModelRegistry, adapter_base, is_adapter_folder, is_valid_local_name
from core.ownership import COMMAND_LINE, ModelOwners, Person, refuse_unless_owner


def saved_models(registry: ModelRegistry) -> list[str]:
    """The folders of the models folder a person can rename or delete (usable or not). Names
    only, no config read: the Fine-tune tab asks at every tick of its job timer."""
    folder = registry.models_dir
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and is_valid_local_name(entry.name))


def free_name(models_dir: str | Path, wanted: str) -> str:
    """`wanted` made a valid model name that no folder of the models folder has yet: characters
    a name may not hold become '-', and -2, -3, ... is added while the name is taken."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted or "").strip("-._")[:90] or "my-model"
    candidate, number = base, 1
    while (Path(models_dir) / candidate).exists():
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def new_model_folder(models_dir: str | Path, model_name: str) -> Path:
    """The folder a new model named `model_name` takes (a save, a rename); WorkbenchError if the
    name is not valid or is taken."""
    name = (model_name or "").strip()
    if not is_valid_local_name(name):
        raise WorkbenchError(
            "Name the new model with letters, digits, '.', '_' or '-' (up to 100 characters, "
            "starting with a letter or digit).")
    target = Path(models_dir) / name
    if target.exists():
        raise WorkbenchError(f"A model named '{name}' already exists: choose another name.")
    return target


def check_rename(registry: ModelRegistry, runner, name: str, new_name: str, person: Person = COMMAND_LINE) -> Path:
    """The folder of `name`, if `person` may rename it to `new_name`; else WorkbenchError saying why."""
    folder = _managed_folder(registry, runner, name, person)
    new_model_folder(registry.models_dir, new_name)  # a bad or taken name: refused
    return folder


def check_delete(registry: ModelRegistry, runner, name: str, person: Person = COMMAND_LINE) -> Path:
    """The folder of `name`, if `person` may delete it; else WorkbenchError saying why."""
    return _managed_folder(registry, runner, name, person)


def rename_model(registry: ModelRegistry, runner, name: str, new_name: str, person: Person = COMMAND_LINE) -> Path:
    folder = check_rename(registry, runner, name, new_name, person)
    target = folder.with_name(new_name.strip())
    os.rename(folder, target)
    registry.forget(folder.name)
    runner.history.model_renamed(folder.name, target.name)
    ModelOwners(registry.models_dir).renamed(folder.name, target.name)
    return target


def delete_model(registry: ModelRegistry, runner, name: str, person: Person = COMMAND_LINE) -> None:
    folder = check_delete(registry, runner, name, person)
    doomed = atomic.temporary_beside(folder, "deleting")  # gone from the listing at once
    os.rename(folder, doomed)
    registry.forget(folder.name)
    runner.history.model_deleted(folder.name)
    ModelOwners(registry.models_dir).forget(folder.name)
    shutil.rmtree(doomed, ignore_errors=True)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _built_on(folder: Path, base: str) -> bool:
    try:
        return is_adapter_folder(folder) and adapter_base(folder)[0] == base
    except (OSError, ValueError):
        return False


def _managed_folder(registry: ModelRegistry, runner, name: str | None, person: Person) -> Path:
    name = (name or "").strip()
    models_dir = registry.models_dir.resolve()
    folder = models_dir / name
    # A plain folder name, directly inside the models folder (no "..", no links out of it).
    if not is_valid_local_name(name) or not folder.is_dir() or folder.resolve().parent != models_dir:
        raise WorkbenchError(f"There is no model named '{name[:100]}' in the models folder.")
    refuse_unless_owner(person, ModelOwners(registry.models_dir).owner_of(name), f"The model '{name}'", "change")
    if use := runner.use_of(name):
        raise WorkbenchError(f"'{name}' is in use: {use}. Wait for the run to end first.")
    dependents = [other.name for other in models_dir.iterdir() if other != folder and _built_on(other, name)]
    if dependents:
        raise WorkbenchError(f"'{name}' is the base of the LoRA adapter {', '.join(map(repr, dependents))}, which "
                             f"would stop loading: delete or rename that first.")
    return folder
