"""Figures measured by the bench scripts that the page quotes, read from one file the benches
write (`data/measurements.json`): a quoted figure is always the last measured one, never a
string typed into the UI. A figure that was never measured is simply not quoted.

    measured("qa_chat")  # -> {"model": ..., "right": 11, "questions": 36, ...} or None
"""

from __future__ import annotations

import json
from pathlib import Path

from core import atomic

MEASUREMENTS_FILE = Path(__file__).resolve().parent.parent / "data" / "measurements.json"


def measured(name: str, path: Path = MEASUREMENTS_FILE) -> dict | None:
    """The figures the bench recorded under `name`, or None."""
    try:
        figures = json.loads(path.read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        return None
    return figures if isinstance(figures, dict) else None


def save(name: str, figures: dict, path: Path = MEASUREMENTS_FILE) -> None:
    """Record `figures` under `name` (bench scripts only), keeping the others; written to a
    temporary file renamed into place."""
    try:
        everything = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        everything = {}
    everything[name] = figures
    atomic.write_text(path, json.dumps(everything, indent=2, sort_keys=True) + "\n")
