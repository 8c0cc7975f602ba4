"""How long the packaged SmolLM2 takes to become usable: converting its GGUF file (what every
start would pay without the cache) against loading the converted folder (what later starts pay).

    .venv/bin/python bench/packaged_load.py

Both are measured in this run, after the libraries are imported, in a fresh cache folder.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAME = "packaged:SmolLM2-135M-Instruct"
LOADS = 3


def main() -> None:
    os.environ["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="workbench-bench-")
    import torch  # noqa: F401  (imports are not what is measured)
    import transformers  # noqa: F401

    from core.models import TEXT_GENERATION, ModelRegistry
    from core.packaged import model_folder

    started = time.perf_counter()
    model_folder(NAME, report=lambda line: None)
    convert = time.perf_counter() - started

    loads = []
    for _ in range(LOADS):
        registry = ModelRegistry(tempfile.mkdtemp())  # nothing cached in memory
        started = time.perf_counter()
        registry.get(TEXT_GENERATION, NAME)
        loads.append(time.perf_counter() - started)
    load = statistics.median(loads)
    print(f"convert GGUF -> folder (first start): {convert:6.2f} s")
    print(f"load converted folder (later starts): {load:6.2f} s  (median of {LOADS}: "
          + ", ".join(f"{value:.2f}" for value in loads) + ")")
    print(f"ratio: later starts are {convert / load:.1f}x faster")


if __name__ == "__main__":
    main()
