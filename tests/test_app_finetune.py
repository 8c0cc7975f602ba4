"""The fine-tune tab through gradio_client, against its own app server and models folder."""

from __future__ import annotations

import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file

from conftest import separable_csv


def finetune_args(train_path, name, **overrides):
    args = dict(task="classification", train_file=handle_file(str(train_path)), validation_file=None,
                text_column="text", label_column="label", base_model="tiny-bert-sentiment", model_name=name,
                epochs=8, learning_rate=3e-3, batch_size=8, gradient_accumulation_steps=1, max_length=32,
                warmup_ratio=0.1, weight_decay=0.01, seed=0, validation_share=0.25, mlm_probability=0.15,
                whole_word_masking=False, precision="auto", lora=False, checkpoint_every=0)
    args.update(overrides)
    return args


def job_status(client) -> dict:
    return client.predict(api_name="/finetune_status")


def wait_for_state(client, *states: str, timeout: float = 120) -> dict:
    """Until the job is in one of `states` (the server answers when the job changes to one)."""
    status = client.predict(until=",".join(states), timeout=timeout, api_name="/finetune_wait")
    assert status["state"] in states, status
    return status


def wait_for_checkpoint(models_dir, name: str, timeout: float = 120) -> None:
    """Until the run `name` has written its first complete checkpoint."""
    folder = models_dir / ".checkpoints" / name
    deadline = time.monotonic() + timeout
    while not list(folder.glob("step-*/workbench_state.json")):
        assert time.monotonic() < deadline, f"no checkpoint in {folder} after {timeout} s"
        time.sleep(0.05)


def wait_for_live_step(client, name: str, timeout: float = 60) -> dict:
    """Until `name` is running and has reported a training step."""
    status = client.predict(until="running", model_name=name, phase="training", timeout=timeout,
                            api_name="/finetune_wait")
    assert (status["state"], status["model_name"], status["phase"]) == ("running", name, "training"), status
    return status


def cancel_while_training(client, data, name: str, before_cancel=None) -> dict:
    """Start a long run of `name`, cancel it once it trains (after `before_cancel()`, if given),
    and return its status once cancelled."""
    client.predict(**finetune_args(data, name, epochs=20, batch_size=2), api_name="/finetune")
    wait_for_live_step(client, name)
    if before_cancel:
        before_cancel()
    client.predict(api_name="/finetune_cancel")
    return wait_for_state(client, "cancelled", timeout=30)


def test_finetune_trains_in_the_background_saves_and_the_model_classifies(ft_client, finetune_server, tmp_path):
    started = ft_client.predict(**finetune_args(separable_csv(tmp_path / "weather.csv"), "weather-model"),
                                api_name="/finetune")
    assert "**weather-model**" in started and "(running)" in started  # it answers at once
    status = wait_for_state(ft_client, "finished", "failed", timeout=300)
    assert status["message"].startswith("Done: saved as 'weather-model'"), status
    assert status["step"] == status["total_steps"] > 0
    assert {"train", "validation"} <= {point["series"] for point in status["loss_curve"]}
    assert status["metrics_after"]["accuracy"] >= 0.9
    assert status["metrics_after"]["labels"] == ["rainy", "sunny"]
    zip_file = ft_client.predict(model_name="weather-model", api_name="/finetune_download")
    assert zip_file.endswith("weather-model.zip")
    assert {"config.json", "model.safetensors", "README.md"} <= set(zipfile.ZipFile(zip_file).namelist())
    assert (finetune_server.models_dir / "weather-model" / "README.md").is_file()
    scores = ft_client.predict(text="a dog sees the bright moon and a warm bread", model="weather-model",
                               api_name="/classify")
    assert scores["label"] == "sunny"
    assert "weather-model" in [model["name"] for model in ft_client.predict("text-classification",
                                                                            api_name="/models")]


def test_a_second_start_waits_in_line_and_cancel_offers_save_or_discard(ft_client, finetune_server, tmp_path):
    data = separable_csv(tmp_path / "long.csv", rows_per_class=200)
    small = separable_csv(tmp_path / "small.csv")

    def second_start_waits():
        queued = ft_client.predict(**finetune_args(small, "second-run"), api_name="/finetune")
        assert "Queued: your run is next ('long-run' is training, step" in queued

    cancelled = cancel_while_training(ft_client, data, "long-run", before_cancel=second_start_waits)
    assert "save what was trained, or discard it" in cancelled["message"]
    # The trained model holds the slot until it is saved or discarded; the run in line waits.
    assert "a trained 'long-run' waits to be saved or discarded" in job_status(ft_client)["queued"]["message"]
    ft_client.predict(api_name="/finetune_discard")
    assert not (finetune_server.models_dir / "long-run").exists()
    done = wait_for_state(ft_client, "finished", "failed", timeout=300)  # the run in line started by itself
    assert done["message"].startswith("Done: saved as 'second-run'"), done
    assert job_status(ft_client)["queued"] is None


def test_a_cancelled_run_can_be_saved_and_is_listed(ft_client, finetune_server, tmp_path):
    cancel_while_training(ft_client, separable_csv(tmp_path / "long.csv", rows_per_class=200), "partial-run")
    ft_client.predict(api_name="/finetune_save")
    saved = wait_for_state(ft_client, "finished", "save failed")
    assert saved["message"].startswith("Saved the partly trained model as 'partial-run'"), saved
    assert ft_client.predict(text="the old bridge", model="partial-run",
                             api_name="/classify")["label"] in {"sunny", "rainy"}


def test_a_failed_save_keeps_the_trained_model_to_save_under_another_name(ft_client, finetune_server,
                                                                         tmp_path):
    """The name is taken while the run trains (someone copies a model there): the save fails,
    the reason is shown, and nothing trained is lost."""
    models = finetune_server.models_dir
    data = separable_csv(tmp_path / "long.csv", rows_per_class=100)
    # Hundreds of steps; the name is taken as soon as the run has started (its name was free
    # then), not after a step is seen: a forked run can be most of the way through by then.
    started = ft_client.predict(**finetune_args(data, "taken-name", epochs=20, batch_size=4), api_name="/finetune")
    shutil.copytree(models / "tiny-bert-sentiment", models / "taken-name")
    assert job_status(ft_client)["state"] == "running", started
    failed = wait_for_state(ft_client, "save failed", "finished", "failed", timeout=300)
    assert failed["state"] == "save failed", failed
    assert "A model named 'taken-name' already exists" in failed["message"]
    assert "The trained model is kept" in failed["message"]
    with pytest.raises(Exception, match="A model named 'taken-name' already exists"):
        ft_client.predict(model_name="taken-name", api_name="/finetune_save")  # still taken: refused at once
    assert job_status(ft_client)["state"] == "save failed"
    ft_client.predict(model_name="not-taken", api_name="/finetune_save")
    saved = wait_for_state(ft_client, "finished", "save failed")
    assert saved["message"].startswith("Done: saved as 'not-taken'; trained in float32. Kept the "), saved
    assert re.search(r"epoch \d+ \(step \d+\)", saved["message"])  # which weights were saved
    assert saved["metrics_after"] == failed["metrics_after"]  # the same trained model
    assert ft_client.predict(text="the old bridge", model="not-taken", api_name="/classify")["label"] == "rainy"


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"text,label\nonly one class,a\nanother,a\n", "2 classes|two classes|at least 2"),
])
def test_a_bad_upload_is_refused_and_nothing_starts(ft_client, tmp_path, content, message):
    before = job_status(ft_client)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(Exception, match=message):
        ft_client.predict(**finetune_args(bad, "never-made"), api_name="/finetune")
    assert job_status(ft_client) == before


def test_an_existing_or_unsafe_name_is_refused(ft_client, tmp_path):
    data = separable_csv(tmp_path / "w.csv")
    with pytest.raises(Exception, match="already exists"):
        ft_client.predict(**finetune_args(data, "tiny-gpt2"), api_name="/finetune")
    with pytest.raises(Exception, match="Name the new model"):
        ft_client.predict(**finetune_args(data, "../escape"), api_name="/finetune")


def test_a_base_model_that_cannot_load_is_refused_before_anything_starts(ft_client, tmp_path):
    data = separable_csv(tmp_path / "w.csv")
    before = job_status(ft_client)
    for base, message in (("no-such-local-model", "'no-such-local-model' is not a model name|cannot be reached"),
                          ("some-org/some-model", "cannot be reached"),  # a Hub id, and no Hub
                          ("tiny-bert-sentiment", None)):
        if message is None:  # a classifier's encoder cannot learn to write: refused with the reason
            with pytest.raises(Exception, match="not a text-generation model"):
                ft_client.predict(**finetune_args(data, "never-made", base_model=base, task="causal-lm"),
                                  api_name="/finetune")
            continue
        with pytest.raises(Exception, match=message):
            ft_client.predict(**finetune_args(data, "never-made", base_model=base), api_name="/finetune")
    assert job_status(ft_client) == before  # nothing started, nothing recorded


def test_a_run_that_fails_leaves_no_run_folder_behind(ft_client, finetune_server, tmp_path):
    data = separable_csv(tmp_path / "w.csv")
    # LoRA on layers the model does not have: accepted, then it fails building the model, before any checkpoint.
    ft_client.predict(**finetune_args(data, "doomed", lora=True, lora_target_modules="no_such_layer",
                                      checkpoint_every=5), api_name="/finetune")
    failed = wait_for_state(ft_client, "failed", "finished")
    assert failed["state"] == "failed" and "no_such_layer" in failed["message"]
    assert not (finetune_server.models_dir / ".checkpoints" / "doomed").exists()  # no copy of the upload left


def test_the_preview_shows_sizes_label_counts_token_lengths_and_first_rows(ft_client, tmp_path):
    data = separable_csv(tmp_path / "weather.csv", rows_per_class=40)
    summary, table = ft_client.predict(
        task="classification", train_file=handle_file(str(data)), text_column="text", label_column="label",
        validation_share=0.25, base_model="tiny-bert-sentiment", api_name="/finetune_preview")
    assert "**60** training rows, **20** validation rows" in summary  # 80 rows, a quarter held out
    assert "Labels: rainy: 30, sunny: 30." in summary  # stratified
    assert "Tokens per text:" in summary  # measured with the base model's tokenizer
    # What the run will be: sized to the data (a classifier's defaults), and its time timed here.
    assert "**60 rows** for training (20 for validation); **5 epochs in batches of 8 = 40 optimizer steps**" in summary
    assert re.search(r"Estimated time on this machine: about \d+ (s|min) \([\d.]+ s per step, timed", summary)
    assert table["headers"] == ["label", "text"]  # the label in view first; a table like the others'
    rows = table["data"]
    assert len(rows) == 5 and all(text in data.read_text() for _, text in rows)
    assert {label for label, _ in rows} == {"sunny", "rainy"}  # label names, not ids


def overlapping_csv(path, rows: int = 60):
    """Every text twice, once per pair of rows: how many validation texts also train depends
    on the split, so the count tells splits apart."""
    lines = ["text,label"] + [f"text number {i // 2},{'a' if i % 4 < 2 else 'b'}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def overlap_warnings(warnings) -> list[str]:
    return [warning.removeprefix("⚠️ ") for warning in warnings if "also appear in the training data" in warning]


def test_the_preview_describes_the_split_that_trains(ft_client, tmp_path):
    from core.data import CLASSIFICATION, load_training_data

    data = overlapping_csv(tmp_path / "pairs.csv")
    by_seed = {seed: overlap_warnings(load_training_data(CLASSIFICATION, data, validation_share=0.2,
                                                         seed=seed).warnings) for seed in range(12)}
    first, second = next((a, b) for a in by_seed for b in by_seed if by_seed[a] != by_seed[b])

    def preview_overlap(seed):
        summary, _ = ft_client.predict(task="classification", train_file=handle_file(str(data)), seed=seed,
                                       validation_share=0.2, base_model="tiny-bert-sentiment",
                                       api_name="/finetune_preview")
        return overlap_warnings(summary.split("\n\n"))

    assert preview_overlap(first) == by_seed[first] and preview_overlap(second) == by_seed[second]
    ft_client.predict(**finetune_args(data, "pairs-model", seed=second, epochs=1, validation_share=0.2),
                      api_name="/finetune")
    trained = wait_for_state(ft_client, "finished", "failed")
    assert overlap_warnings(trained["warnings"]) == by_seed[second]


def test_model_zips_are_built_once_per_version_and_an_older_version_s_zip_is_removed(tmp_path, monkeypatch):
    from demos import finetune

    builds = []
    real_make_archive = shutil.make_archive
    monkeypatch.setattr(finetune.shutil, "make_archive", lambda *a, **k: builds.append(a) or real_make_archive(*a, **k))
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    zips = finetune._ZipCache()
    first = zips.archive(folder)
    assert zips.archive(folder) == first and len(builds) == 1  # asked again: not rebuilt
    later = os.stat(folder / "config.json").st_mtime_ns + 10**9
    (folder / "config.json").write_text('{"newer": true}')  # a newer model saved under the name
    os.utime(folder / "config.json", ns=(later, later))
    second = zips.archive(folder)
    assert len(builds) == 2 and zipfile.ZipFile(second).read("config.json") == b'{"newer": true}'
    assert [path.name for path in Path(second).parent.iterdir()] == ["my-model.zip"]  # one zip, the new one


def test_a_small_text_gets_enough_steps_and_the_preview_says_them_and_their_time(ft_client, tmp_path):
    """A small text with the old defaults made 3 steps and no change of style: sized to the data,
    it gets at least LM_TARGET_STEPS (bench/style_steps.py). The preview says so before the start,
    with a time measured from a few real steps here, timed once per run shape; the run makes
    exactly the steps the preview said."""
    from core.run_plan import LM_TARGET_STEPS

    notes = tmp_path / "field-notes.txt"
    notes.write_text("".join(f"Day {i}: the cat sees the red house and a dog reads a long book.\n" for i in range(40)),
                     encoding="utf-8")
    settings = dict(task="causal-lm", train_file=handle_file(str(notes)), base_model="tiny-gpt2", max_length=32)
    first = ft_client.submit(**settings, api_name="/finetune_preview")
    summary, _ = first.result(timeout=300)
    assert any("Timing a few training steps on this machine" in output[0] for output in first.outputs())
    planned = int(re.search(r"= ([\d,]+) optimizer steps", summary).group(1).replace(",", ""))
    assert planned >= LM_TARGET_STEPS and "sized to the data" in summary and "blocks of 32 tokens" in summary
    assert "Estimated time on this machine: about" in summary
    again = ft_client.submit(**settings, api_name="/finetune_preview")
    assert again.result(timeout=120)[0] == summary
    assert not any("Timing" in output[0] for output in again.outputs())  # the same shape: remembered

    ft_client.predict(**{**finetune_args(notes, "notes-writer", task="causal-lm", base_model="tiny-gpt2",
                                         text_column=None, label_column=None, max_length=32),
                         "epochs": None, "batch_size": None}, api_name="/finetune")
    done = wait_for_state(ft_client, "finished", "failed", timeout=300)
    assert done["state"] == "finished" and done["total_steps"] == planned, done


@pytest.mark.parametrize("timeout", ["NaN", "Infinity"])
def test_a_wait_without_a_finite_timeout_is_refused_at_once(finetune_server, timeout):
    """JSON as Python writes it may carry NaN: such a wait would never end."""
    import urllib.error
    import urllib.request

    call = urllib.request.Request(f"{finetune_server.url}gradio_api/run/finetune_wait", method="POST",
                                  data=f'{{"data": ["finished", "", "", {timeout}]}}'.encode(),
                                  headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(call, timeout=60)
    assert "The timeout must be a number of seconds, up to 600" in refused.value.read().decode()
