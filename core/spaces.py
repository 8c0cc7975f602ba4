"""Hugging Face Spaces: where a Space keeps what must outlive a restart.

A Space's disk is wiped at every restart; with persistent storage it mounts a volume at /data.
When it is there, the models people fine-tune (with their run history and checkpoints) and the
Hugging Face cache (downloaded models) go to it, unless the Space's variables say otherwise.
This runs before gradio or huggingface_hub is imported: they read HF_HOME once, at import.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PERSISTENT_STORAGE = Path("/data")


def use_persistent_storage(environ: MutableMapping[str, str] = os.environ,
                           storage: Path = PERSISTENT_STORAGE) -> list[str]:
    """On a Space (SPACE_ID set) with writable persistent storage, default the models folder and
    the Hugging Face cache to it; returns the variables it set (none elsewhere)."""
    if not environ.get("SPACE_ID") or not storage.is_dir() or not os.access(storage, os.W_OK):
        return []
    defaults = {"WORKBENCH_MODELS_DIR": str(storage / "models"), "HF_HOME": str(storage / ".huggingface")}
    chosen = [name for name in defaults if name not in environ]
    for name in chosen:
        environ[name] = defaults[name]
    return chosen
