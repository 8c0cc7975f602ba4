"""Each setting is described once, on its config's field (core/settings.py): the checks, the
panels' fields, the API's defaults and the command line's help all say the same range."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from core.errors import WorkbenchError
from core.inference import GenerationSettings
from core.settings import described
from core.training import TrainConfig


def ranged_fields(config_class) -> list[str]:
    return [item.name for item in dataclasses.fields(config_class)
            if "setting" in item.metadata and item.metadata["setting"].low is not None]


def test_a_value_outside_a_declared_range_is_refused_with_its_name_and_range():
    with pytest.raises(WorkbenchError, match=r"warmup_ratio must be at least 0 and at most 0.5 \(got 0.9\)"):
        TrainConfig(task="classification", base_model="m", warmup_ratio=0.9)
    with pytest.raises(WorkbenchError, match=r"learning_rate must be above 0"):
        TrainConfig(task="classification", base_model="m", learning_rate=0)
    with pytest.raises(WorkbenchError, match="Top-k must be a whole number"):  # the panel's label
        GenerationSettings(top_k=3.5)
    config = TrainConfig(task="classification", base_model="m", max_length=64.0, seed=7.0)
    assert (config.max_length, config.seed) == (64, 7) and isinstance(config.max_length, int)
    assert TrainConfig(task="classification", base_model="m").epochs is None  # left to the data


def test_every_slider_of_a_config_has_the_fields_label_range_and_default(models_dir):
    import app
    from demos.common import SettingSlider, defaults_of

    page = app.build_app(models_dir)
    sliders = {block.label: block for block in page.blocks.values() if isinstance(block, SettingSlider)}
    checked = 0
    for config_class in (TrainConfig, GenerationSettings):
        defaults = defaults_of(config_class)
        for name in ranged_fields(config_class):
            field = described(config_class, name)
            if field.step is None:
                continue  # a number box, not a slider
            slider = sliders[field.label]
            assert (slider.minimum, slider.maximum, slider.step) == (field.low, field.high, field.step), name
            assert slider.value == defaults[name] and field.limits in slider.info, name
            checked += 1
    assert checked >= 15  # the fine-tune tab's nine and the generation panel's six


def test_the_command_line_help_gives_each_settings_label_and_range():
    run = subprocess.run([sys.executable, "-m", "core.training", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    help_text = " ".join(run.stdout.split())
    for name in ranged_fields(TrainConfig):
        field = described(TrainConfig, name)
        assert f"{field.label} ({field.limits})" in help_text, name
