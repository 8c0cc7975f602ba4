"""How long the one-click starter sentiment model takes, as a person waits for it: the whole job
(load MiniLM, score it before, train, score it after, save) against the training steps alone.

    .venv/bin/python bench/starter.py [--smoke]

The UI and README quote the whole job's time (core/starter.py STARTER_MINUTES).
--smoke: one epoch on the starter data, for the test suite.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from common import parse_args, record, table


def main() -> None:
    args, _ = parse_args(None, __doc__)
    import torch  # noqa: F401  (imports are not what is measured)
    import transformers  # noqa: F401

    from core.starter import STARTER_NAME, starter_config
    from core.training import train

    config = starter_config()
    if args.smoke:
        config = dataclasses.replace(config, epochs=1)
    steps: list[float] = []

    def on_progress(progress):
        if progress.phase == "training":
            steps.append(time.perf_counter())

    output = Path(tempfile.mkdtemp(prefix="workbench-bench-")) / STARTER_NAME
    started = time.perf_counter()
    result = train(dataclasses.replace(config, output_dir=str(output)), on_progress=on_progress)
    whole = time.perf_counter() - started
    # From the first step's end to the last: the training itself (one step short, a fair floor).
    training = steps[-1] - steps[0] if len(steps) > 1 else 0.0
    body = table(["what", "seconds"], [
        ["the whole starter job (load, score before, train, score after, save)", whole],
        [f"its {len(steps)} training steps", training],
    ])
    body += (f"\n\nRatio: the training steps are {training / whole:.0%} of the job; held-out accuracy "
             f"{result.metrics_after['accuracy']:.2f} ({result.precision}).")
    record("Starter sentiment model: the whole job vs its training steps", body, args.smoke)


if __name__ == "__main__":
    main()
