"""What the Fine-tune tab's loss plot draws of a run (demos/finetune.py): a long run as a bounded
number of points that change only when a stretch of steps is done (so a watching page is not
redrawing the plot at every poll), a short run step by step."""

from __future__ import annotations

import pandas as pd

from core.jobs.status import CANCELLED, RUNNING, SAVING, JobStatus
from core.training.config import Progress
from demos.finetune import PLOTTED_TRAIN_POINTS, _loss_frame


def run_at(step: int, total_steps: int, state: str = RUNNING, phase: str = "training") -> JobStatus:
    """A run at `step` of `total_steps`: train loss 10 / step at each step, and a validation point
    before training and at each 1,000 steps."""
    curve = [{"step": 0, "loss": 3.0, "series": "validation"}]
    for number in range(1, step + 1):
        curve.append({"step": number, "loss": 10 / number, "series": "train"})
        if number % 1000 == 0:
            curve.append({"step": number, "loss": 2.0, "series": "validation"})
    progress = Progress(phase, step, total_steps, loss=10 / step)
    return JobStatus(state=state, progress=progress, last_training_step=progress, loss_curve=curve)


def series(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["series"] == name].reset_index(drop=True)


def test_a_long_run_is_drawn_as_the_mean_of_each_finished_stretch_and_validation_as_measured():
    total = 4000
    stretch = total // PLOTTED_TRAIN_POINTS  # 20 steps a point
    frame = _loss_frame(run_at(1234, total))
    train = series(frame, "train")
    # Stretches done by step 1234: steps 1-20, ..., 1201-1220; the one still training is not drawn.
    assert list(train["step"]) == list(range(stretch, 1221, stretch))
    first = sum(10 / number for number in range(1, stretch + 1)) / stretch
    assert abs(train["loss"][0] - first) < 1e-9
    assert list(series(frame, "validation")["step"]) == [0, 1000]
    # Polls within one stretch draw the same plot: nothing to redraw.
    assert _loss_frame(run_at(1221, total)).equals(_loss_frame(run_at(1239, total)))
    assert not _loss_frame(run_at(1239, total)).equals(_loss_frame(run_at(1240, total)))
    # The whole run is at most PLOTTED_TRAIN_POINTS train points.
    assert len(series(_loss_frame(run_at(total, total, state=CANCELLED)), "train")) == PLOTTED_TRAIN_POINTS


def test_a_run_that_ended_mid_stretch_shows_its_last_steps_too():
    frame = series(_loss_frame(run_at(1234, 4000, state=CANCELLED)), "train")
    assert frame["step"].iloc[-1] == 1234
    assert abs(frame["loss"].iloc[-1] - sum(10 / n for n in range(1221, 1235)) / 14) < 1e-9
    # Training over, the run still saving (or evaluating): its last steps are drawn already.
    assert _loss_frame(run_at(1234, 4000, state=SAVING, phase="saving")).equals(
        _loss_frame(run_at(1234, 4000, state=CANCELLED)))


def test_a_short_run_is_drawn_step_by_step():
    frame = _loss_frame(run_at(57, PLOTTED_TRAIN_POINTS))
    assert list(series(frame, "train")["step"]) == list(range(1, 58))
    assert list(series(frame, "train")["loss"]) == [10 / number for number in range(1, 58)]
