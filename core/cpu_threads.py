"""How many threads torch's CPU ops use in the server and in a training child, so that the two
share the machine's cores instead of fighting over them.

Why: torch starts with one OpenMP thread per core in every process. While a fine-tune trains
beside the server, both use every core: each process's OpenMP workers then wait for cores the
other holds, and both slow down (bench/threads_under_load.py measures each pair of thread counts
side by side). So a training child started by the server leaves one core to the server (people
keep using the panels while a run trains), and while it runs the server's model thread uses only
the cores the child leaves. With no run training, the server uses every core. Training from the
command line is left to torch's default (it has the machine to itself), and so is everything
when the person set OMP_NUM_THREADS themselves.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, lowered to a cgroup CPU quota if one is
    set (a container limited to 2 CPUs on a 64-core host)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="utf-8").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def training_threads(cores: int, processes: int = 1) -> int:
    """Threads for each process of a training run started by the server: the cores less one kept
    for the server, shared among the run's processes; at least one each."""
    return max(1, (cores - 1) // processes) if cores > 1 else 1


def server_threads(cores: int, training: int) -> int:
    """Threads for the server's model thread while training processes use `training` threads in
    all (0: none runs): the cores they leave, at least one."""
    return max(1, cores - training)


def threads_set_by_person() -> bool:
    """OMP_NUM_THREADS is set in the environment: the person chose, and we leave thread counts alone."""
    return bool(os.environ.get("OMP_NUM_THREADS"))
