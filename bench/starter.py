"""How long the one-click starter sentiment model takes, as a person waits for it: the whole job
as the app runs it (a training process started, MiniLM loaded and scored, trained, scored
again, saved) against its training steps alone.

    .venv/bin/python bench/starter.py [--smoke]

The README quotes the whole job's time; the page quotes only times measured on the running machine.
--smoke: one epoch, for the test suite.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from common import parse_args, record, table


def main() -> None:
    args, _ = parse_args(None, __doc__)
    from core.jobs import FINISHED, JobRunner
    from core.starter import STARTER_NAME, starter_config

    config = starter_config()
    if args.smoke:
        config = dataclasses.replace(config, epochs=1)
    runner = JobRunner(Path(tempfile.mkdtemp(prefix="workbench-bench-")))
    started = time.perf_counter()
    runner.start(config, STARTER_NAME)
    job = runner.wait()
    whole = time.perf_counter() - started
    if job.state != FINISHED:
        raise SystemExit(job.message)
    last = job.last_training_step
    # The loop's own measure: samples per second over the training steps.
    training = last.total_steps * config.batch_size / last.samples_per_second
    body = table(["what", "seconds"], [
        ["the whole starter job, as the app runs it (process start, load, score, train, score, save)", whole],
        [f"its {last.total_steps} training steps", training],
    ])
    body += (f"\n\nRatio: the training steps are {training / whole:.0%} of the job; held-out accuracy "
             f"{job.metrics_after['accuracy']:.2f}.")
    record("Starter sentiment model: the whole job vs its training steps", body, args.smoke)


if __name__ == "__main__":
    main()
