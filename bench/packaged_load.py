"""How long the packaged SmolLM2 takes to become usable:
- its one-off conversion: transformers reading the GGUF file as it does alone (its metadata
  parsed three times, the tensor-name table built for every module) against ours (each once,
  core/packaged.py), into two new folders that must be the same byte for byte;
- converting (what every start would pay without the cache) against loading the converted folder
  (what later starts pay).

    .venv/bin/python bench/packaged_load.py [--repeats 3] [--smoke]

Measured in this run, after the libraries are imported, in fresh cache folders (--smoke: ours
only, into the current cache, one load; for the test suite).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from common import median_seconds, paired_medians, parse_args, record, table

NAME = "packaged:SmolLM2-135M-Instruct"


def same_files(first: Path, second: Path) -> bool:
    names = sorted(path.name for path in first.iterdir())
    return names == sorted(path.name for path in second.iterdir()) and all(
        (first / name).read_bytes() == (second / name).read_bytes() for name in names)


def main() -> None:
    args, repeats = parse_args(3, __doc__)
    if not args.smoke:
        os.environ["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="workbench-bench-")
    import torch  # noqa: F401  (imports are not what is measured)
    import transformers  # noqa: F401

    from core import packaged
    from core.models import TEXT_GENERATION, ModelRegistry

    quiet = lambda line: None  # noqa: E731
    if args.smoke:
        rows = []
    else:
        # In turns, each into a new folder; one conversion first, untimed, so that neither pays
        # the first use of transformers' GGUF code.
        source, scratch = packaged.installed_file(NAME), Path(tempfile.mkdtemp(prefix="workbench-bench-convert-"))
        folders = iter(range(1_000))

        def conversion(read_once: bool) -> Path:
            target = scratch / f"{next(folders)}"
            packaged.convert_gguf(source, target, quiet, read_once=read_once)
            return target

        try:
            conversion(True)
            plain, ours = paired_medians(lambda: conversion(False), lambda: conversion(True), repeats)
            same = same_files(conversion(False), conversion(True))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # some 270 MB a conversion
        rows = [["baseline: transformers alone converts the GGUF file", plain, f"median of {repeats}"],
                ["ours: convert it, metadata read once (first start)", ours, f"median of {repeats}"]]
    convert, _ = median_seconds(lambda: packaged.model_folder(NAME, report=quiet), 1)
    if args.smoke:
        rows.append(["convert it, or find it converted (first start)", convert, f"{convert:.2f}"])
    else:
        convert = ours
    # A new registry each time: nothing cached in memory, the folder read from disk.
    load, loads = median_seconds(lambda: ModelRegistry(tempfile.mkdtemp()).get(TEXT_GENERATION, NAME), repeats)
    rows.append(["load the converted folder (later starts)", load, ", ".join(f"{t:.2f}" for t in loads)])
    body = table(["start", "seconds", "runs (s)"], rows)
    if not args.smoke:
        body += (f"\n\nRatio: our conversion takes {ours / plain:.2f}x the time of transformers' own; the two "
                 f"folders are {'the same byte for byte' if same else 'DIFFERENT'}.")
    body += f"\nRatio: later starts are {convert / load:.1f}x faster than converting each time."
    record("Packaged SmolLM2: convert once vs load the converted folder", body, args.smoke)


if __name__ == "__main__":
    main()
