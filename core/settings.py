"""A form's setting, described once, where its config dataclass declares it: its default, the
label a person reads, its range and step. TrainConfig and GenerationSettings declare their
fields with `setting`; from there come their checks (`check_ranges`), the panels' sliders
(demos/common.py `slider_for`), the API's defaults (`defaults_of`) and the command line's help
(`command_line_field`)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from core.errors import require_number

_KEY = "setting"  # where a field's Setting is kept in its metadata


@dataclass(frozen=True)
class Setting:
    label: str  # as the form shows it
    low: float | None = None  # the range, both ends included unless low_open; None: no range
    high: float | None = None
    step: float | None = None  # a slider's step
    whole: bool = False  # whole numbers only
    low_open: bool = False  # `low` itself is not allowed (a learning rate above 0)
    info: str | None = None  # a line under the field

    @property
    def limits(self) -> str:
        """The range as a person reads it: "1–64", "above 0, at most 1" ("" with none)."""
        if self.low is None:
            return ""
        return f"above {self.low:g}, at most {self.high:g}" if self.low_open else f"{self.low:g}–{self.high:g}"


def setting(default: Any, label: str, low: float | None = None, high: float | None = None, *,
            step: float | None = None, whole: bool = False, low_open: bool = False, info: str | None = None,
            **command_line) -> Any:
    """A dataclass field with its default and its description; `command_line`: the metadata
    HfArgumentParser reads (aliases, help, choices)."""
    described = Setting(label, low, high, step, whole, low_open, info)
    return dataclasses.field(default=default, metadata={_KEY: described, **command_line})


def described(config_class, name: str) -> Setting:
    """The Setting of the field `name` of a config dataclass (KeyError if it has none)."""
    return {item.name: item for item in dataclasses.fields(config_class)}[name].metadata[_KEY]


def check_ranges(config, named_by_label: bool = False) -> None:
    """Check every set field of `config` that has a range (a WorkbenchError naming the field, or
    its label, and the range), and make whole-number fields ints (JSON and sliders send 3.0)."""
    for item in dataclasses.fields(config):
        described_ = item.metadata.get(_KEY)
        value = getattr(config, item.name)
        if described_ is None or described_.low is None or value is None:
            continue
        require_number(value, described_.low, described_.high, described_.label if named_by_label else item.name,
                       integer=described_.whole, low_open=described_.low_open)
        if described_.whole:
            setattr(config, item.name, int(value))


def command_line_field(field: dataclasses.Field) -> dataclasses.Field:
    """`field` as HfArgumentParser takes it (it hands all metadata to argparse): the Setting
    left out, and unless the field has its own help, its label and range as the help."""
    metadata = dict(field.metadata)
    described_ = metadata.pop(_KEY, None)
    if described_ and "help" not in metadata:
        metadata["help"] = f"{described_.label} ({described_.limits})" if described_.limits else described_.label
    plain = copy.copy(field)
    plain.metadata = MappingProxyType(metadata)
    return plain
