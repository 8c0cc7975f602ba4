"""What a fine-tuning job costs the web server: training in the server's own process (a thread,
as the job runner once did) against training in a child process (core.jobs today), spawned
(it imports torch and transformers again) or forked from the fork server (which imported them
once, at its first run), over several jobs in a row. Measured: the serving process's resident
memory after each job, the time to each job's first training step (the child's start overhead)
and the time each job takes.

    .venv/bin/python bench/jobs.py [--jobs 5] [--smoke]

The base is all-MiniLM-L6-v2 on the starter data, one epoch a job (--smoke: a tiny BERT, one
job each way, for the test suite). The child-process way runs first, so the in-process way's growth
cannot be mistaken for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, record, table


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def in_a_thread(config) -> float:
    """Train in a thread of this process; the seconds until the first training step."""
    from core.training import train

    began, first = time.perf_counter(), []

    def on_progress(progress) -> None:
        if progress.phase == "training" and not first:
            first.append(time.perf_counter() - began)

    worker = threading.Thread(target=train, args=(config,), kwargs=dict(on_progress=on_progress))
    worker.start()
    worker.join()
    return first[0]


def in_a_child_process(config, forkserver=None) -> float:
    """Train in a child process as the app does; the seconds until the first training step
    reaches the server (the status, polled every 10 ms)."""
    from core.jobs import FINISHED, JobRunner

    runner = JobRunner(config.models_dir, forkserver=forkserver)
    began = time.perf_counter()
    runner.start(dataclasses.replace(config, output_dir=None), Path(config.output_dir).name)
    first = None
    while first is None and runner.status().active:
        if runner.status().last_training_step is not None:
            first = time.perf_counter() - began
        time.sleep(0.01)
    ended = runner.wait()
    if ended.state != FINISHED:
        raise RuntimeError(ended.message)
    return first if first is not None else time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a tiny model, one job each way, RESULTS.md untouched")
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import torch  # noqa: F401  (the server has these imported already: not what is measured)
    import transformers  # noqa: F401

    from core.starter import starter_config

    models_dir = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    config = dataclasses.replace(starter_config(), epochs=1, models_dir=str(models_dir))
    jobs = 1 if args.smoke else args.jobs
    if args.smoke:
        from tiny_models import build_bert_classifier

        build_bert_classifier(models_dir / "tiny-bert")
        config = dataclasses.replace(config, base_model="tiny-bert")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from core.jobs import ForkServer

    forkserver = ForkServer()  # as the app's: started by the first job
    rows = []
    ways = (("child forked from the fork server (ours)", functools.partial(in_a_child_process, forkserver=forkserver)),
            ("child spawned for each job", in_a_child_process), ("thread in the server (baseline)", in_a_thread))
    for way_number, (title, way) in enumerate(ways):
        started_mb, after, seconds, first_steps = resident_mb(), [], [], []
        for number in range(jobs):
            output = models_dir / f"way-{way_number}-job-{number}"
            began = time.perf_counter()
            first_steps.append(way(dataclasses.replace(config, output_dir=str(output))))
            seconds.append(time.perf_counter() - began)
            after.append(resident_mb())
        later = first_steps[1:] or first_steps
        rows.append([title, started_mb, after[-1] - started_mb, first_steps[0], sum(later) / len(later),
                     sum(seconds) / jobs, ", ".join(f"{mb:.0f}" for mb in after)])
    forkserver.close()
    body = table(["way", "server MB before", "grown MB after the jobs", "s to the first job's first step",
                  "s to the first step, later jobs", "s per job", "server MB after each job"], rows)
    forked, spawned, baseline = rows
    body += (f"\n\n{jobs} jobs of {config.base_model}, {config.epochs:g} epoch each. Ratio: the server grew "
             f"{baseline[2]:.0f} MB with training in its own process and {forked[2]:.0f} MB with training in a child "
             f"process. The child's start overhead, after the first job: a forked child's first step comes "
             f"{forked[4] - baseline[4]:.1f} s after the thread's, a spawned child's {spawned[4] - baseline[4]:.1f} s "
             f"(it imports the libraries again): forking starts a run {spawned[4] / forked[4]:.1f}x as fast. A job "
             f"takes {forked[5] / baseline[5]:.2f}x as long as in a thread forked, {spawned[5] / baseline[5]:.2f}x "
             f"spawned.")
    record("Jobs: training in the server's process vs in a child process", body, args.smoke)


if __name__ == "__main__":
    main()
