"""Hugging Face Spaces: where a Space keeps what must outlive a restart.

A Space's disk is wiped at every restart; with persistent storage it mounts a volume at /data.
When it is there, the models people fine-tune (with their run history and checkpoints) and the
Hugging Face cache (downloaded models) go to it, unless the Space's variables say otherwise.
This runs before gradio or huggingface_hub is imported: they read HF_HOME once, at import.

A Space whose metadata says `hf_oauth: true` (this README's does) lets people sign in with their
Hugging Face account: Spaces then sets OAUTH_CLIENT_ID and friends, the page shows a sign-in
button, and a signed-in person is their Hugging Face login on every browser and device
(core/ownership.py); the Space's owner (SPACE_AUTHOR_NAME) may act on everything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, MutableMapping
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


def hf_login_offered(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether people can sign in with Hugging Face here: a Space (as Gradio recognises one:
    SYSTEM=spaces; elsewhere its sign-in is a stand-in that needs a local Hub login) with
    `hf_oauth: true`."""
    return bool(environ.get("SYSTEM") == "spaces" and environ.get("SPACE_ID") and environ.get("OAUTH_CLIENT_ID"))


def space_owner(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Hugging Face user (or organisation) the Space belongs to, when on a Space."""
    return environ.get("SPACE_AUTHOR_NAME") if environ.get("SPACE_ID") else None


def hf_username(session: Mapping) -> str | None:
    """The Hugging Face login a browser session signed in with (Gradio's sign-in keeps it in the
    signed session cookie), or None: not signed in, or the sign-in expired."""
    info = session.get("oauth_info") if session else None
    if not isinstance(info, Mapping) or (info.get("expires_at") or float("inf")) < time.time():
        return None
    return (info.get("userinfo") or {}).get("preferred_username") or None
