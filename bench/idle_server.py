"""What a server nobody uses costs, and what a quick request waits: app.py (its queue polls every
10 ms while idle, app.quiet_queue) against the same app with Gradio's own polling (every 1 ms).
Both servers run at once, so the machine's load falls on both alike.

    .venv/bin/python bench/idle_server.py [--seconds 30] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from common import Server, record, table

GRADIO_POLLING = ("import sys, app; app.quiet_queue = lambda demo: None; app.main(sys.argv[1:])")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_seconds(url: str, calls: int) -> float:
    """Median seconds of a quick queued request (the models list), as a client calls it."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.predict("text-generation", api_name="/models")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30, help="how long both servers stay idle")
    parser.add_argument("--smoke", action="store_true", help="3 idle seconds, 3 requests, RESULTS.md untouched")
    args = parser.parse_args()
    seconds, calls = (3.0, 3) if args.smoke else (args.seconds, 30)
    ours, gradios = Server([sys.executable, "app.py"]), Server([sys.executable, "-c", GRADIO_POLLING])
    try:
        time.sleep(2)  # the start's own work (imports, first page) ends
        before = {server: cpu_seconds(server.process.pid) for server in (ours, gradios)}
        time.sleep(seconds)
        idle = {server: (cpu_seconds(server.process.pid) - before[server]) / seconds for server in (ours, gradios)}
        waits = {server: request_seconds(server.url, calls) for server in (gradios, ours)}
    finally:
        for server in (ours, gradios):
            server.stop()
    body = table(["server", f"idle: share of a core ({seconds:.0f} s)", f"quick request: median of {calls} (ms)"], [
        ["app.py (queue polls every 10 ms)", idle[ours], waits[ours] * 1000],
        ["baseline: Gradio's polling (every 1 ms)", idle[gradios], waits[gradios] * 1000],
    ])
    ratio = idle[gradios] / idle[ours] if idle[ours] else float("inf")
    body += (f"\n\nRatio: idle, the baseline uses {ratio:.1f}x the CPU of app.py; a quick request takes "
             f"{waits[ours] / waits[gradios]:.2f}x as long.")
    record("Idle server: CPU while nobody uses it", body, args.smoke)


if __name__ == "__main__":
    main()
