"""Figures the page quotes come from the file the benches write (core/measurements.py), never
from text typed into the UI."""

from __future__ import annotations

from core import measurements
from demos.finetune import minilm_mlm_note


def test_a_bench_s_figures_are_kept_beside_the_others_and_read_back(tmp_path):
    path = tmp_path / "measurements.json"
    measurements.save("qa_chat", {"right": 11, "questions": 36}, path)
    measurements.save("minilm_mlm", {"steps": 170}, path)
    measurements.save("qa_chat", {"right": 12, "questions": 36}, path)  # a later run replaces its own only
    assert measurements.measured("qa_chat", path) == {"right": 12, "questions": 36}
    assert measurements.measured("minilm_mlm", path) == {"steps": 170}
    assert measurements.measured("never_run", path) is None


def test_the_minilm_note_quotes_the_last_measurement_or_no_figure_at_all():
    figures = {"kilobytes": 150, "epochs": 10, "steps": 170, "distinct_top_words": 1, "sentences": 5}
    assert ("10 epochs on 150 KB of text (170 steps) still gave the same top word for 5 different test sentences"
            in minilm_mlm_note(figures))
    assert "only 2 different top words over 5" in minilm_mlm_note({**figures, "distinct_top_words": 2})
    unmeasured = minilm_mlm_note(None)
    assert "Measured" not in unmeasured and "Use it to try the workflow" in unmeasured
    # The packaged measurement file holds the figures the page shows.
    assert measurements.measured("minilm_mlm")["bench"] == "bench/fill_mask_minilm.py"
