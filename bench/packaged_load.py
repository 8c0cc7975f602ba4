"""How long the packaged SmolLM2 takes to become usable: converting its GGUF file (what every
start would pay without the cache) against loading the converted folder (what later starts pay).

    .venv/bin/python bench/packaged_load.py [--repeats 3] [--smoke]

Both are measured in this run, after the libraries are imported, in a fresh cache folder
(--smoke: the current cache, one load; for the test suite).
"""

from __future__ import annotations

import os
import tempfile

from common import parse_args, median_seconds, record, table

NAME = "packaged:SmolLM2-135M-Instruct"


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    if not args.smoke:
        os.environ["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="workbench-bench-")
    import torch  # noqa: F401  (imports are not what is measured)
    import transformers  # noqa: F401

    from core.models import TEXT_GENERATION, ModelRegistry
    from core.packaged import model_folder

    convert, _ = median_seconds(lambda: model_folder(NAME, report=lambda line: None), 1)
    # A new registry each time: nothing cached in memory, the folder read from disk.
    load, loads = median_seconds(lambda: ModelRegistry(tempfile.mkdtemp()).get(TEXT_GENERATION, NAME), repeats)
    body = table(["start", "seconds", "runs (s)"], [
        ["baseline: convert the GGUF file (first start)", convert, f"{convert:.2f}"],
        ["load the converted folder (later starts)", load, ", ".join(f"{t:.2f}" for t in loads)],
    ])
    body += f"\n\nRatio: later starts are {convert / load:.1f}x faster than converting each time."
    record("Packaged SmolLM2: convert once vs load the converted folder", body, args.smoke)


if __name__ == "__main__":
    main()
