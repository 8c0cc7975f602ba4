"""Files and folders are written whole or not at all (core/atomic.py): a reader sees the old
content or the new, and a failed write leaves the old one and nothing beside it."""

from __future__ import annotations

import pytest

from core import atomic


def test_a_file_is_replaced_whole_and_a_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "state" / "history.json"
    atomic.write_text(path, "[1]")
    atomic.write_text(path, "[1, 2]")
    assert path.read_text(encoding="utf-8") == "[1, 2]"
    with pytest.raises(UnicodeEncodeError):
        atomic.write_text(path, "[\ud800]")  # cannot be written as UTF-8, half-way through
    assert path.read_text(encoding="utf-8") == "[1, 2]"
    assert [p.name for p in path.parent.iterdir()] == ["history.json"]


def test_a_folder_appears_only_once_complete(tmp_path):
    target = tmp_path / "models" / "reviews-classifier"
    with atomic.written_folder(target, "saving") as temporary:
        temporary.mkdir()
        (temporary / "config.json").write_text("{}", encoding="utf-8")
        assert not target.exists()  # nothing under the model's name while it is written
    assert (target / "config.json").read_text(encoding="utf-8") == "{}"
    assert [p.name for p in target.parent.iterdir()] == ["reviews-classifier"]


def test_a_folder_whose_writing_fails_leaves_nothing(tmp_path):
    target = tmp_path / "half"
    with pytest.raises(RuntimeError), atomic.written_folder(target) as temporary:
        temporary.mkdir()
        (temporary / "model.safetensors").write_bytes(b"\0" * 10)
        raise RuntimeError("the disk is full")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_another_process_completed_first_is_kept_or_refused(tmp_path):
    target = tmp_path / "converted"
    with atomic.written_folder(target, "converting", keep_theirs=True) as temporary:
        temporary.mkdir()
        (temporary / "weights").write_text("ours", encoding="utf-8")
        target.mkdir()  # the other process renames its copy into place first
        (target / "weights").write_text("theirs", encoding="utf-8")
    assert (target / "weights").read_text(encoding="utf-8") == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]
    with pytest.raises(OSError), atomic.written_folder(target) as temporary:  # a saved model's name: refused
        temporary.mkdir()
        (temporary / "weights").write_text("ours", encoding="utf-8")
    assert (target / "weights").read_text(encoding="utf-8") == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]


def test_a_cut_off_write_is_found_with_the_process_that_wrote_it(tmp_path):
    import os

    target = tmp_path / "weather-writer"
    with pytest.raises(KeyboardInterrupt), atomic.written_folder(target, "saving") as temporary:
        temporary.mkdir()
        (temporary / "config.json").write_text("{}", encoding="utf-8")
        found = atomic.leftovers(tmp_path, "saving")
        raise KeyboardInterrupt  # as a kill would, but this one still cleans up
    assert found == [(temporary, os.getpid())]
    assert atomic.leftovers(tmp_path, "saving") == []
