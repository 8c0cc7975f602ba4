"""The fine-tune tab through gradio_client, against its own app server and models folder."""

from __future__ import annotations

import time

import pytest
from gradio_client import handle_file

from conftest import separable_csv


def finetune_args(train_path, name, **overrides):
    args = dict(task_value="classification", path=handle_file(str(train_path)), validation_path=None,
                text_col="text", label_col="label", base="tiny-bert-sentiment", name=name, n_epochs=8,
                lr=3e-3, batch=8, accumulation_steps=1, length=32, warmup_share=0.1, decay=0.01,
                seed_value=0, share=0.25, mlm_p=0.15, whole=False, precision_choice="auto", use_lora=False,
                checkpoint_steps=0)
    args.update(overrides)
    return args


def status_text(client) -> str:
    return client.predict(api_name="/finetune_status")[0]


def wait_for_state(client, state: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    text = status_text(client)
    while f"({state})" not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        text = status_text(client)
    return text


def wait_for_checkpoint(models_dir, name: str, timeout: float = 120) -> None:
    """Until the run `name` has written its first complete checkpoint."""
    folder = models_dir / ".checkpoints" / name
    deadline = time.monotonic() + timeout
    while not list(folder.glob("step-*/workbench_state.json")):
        assert time.monotonic() < deadline, f"no checkpoint in {folder} after {timeout} s"
        time.sleep(0.05)


def wait_for_live_step(client, name: str, timeout: float = 60) -> str:
    """Until `name` is running and has reported a training step."""
    deadline = time.monotonic() + timeout
    text = status_text(client)
    while not (f"**{name}**" in text and "(running)" in text and "Step" in text) \
            and time.monotonic() < deadline:
        time.sleep(0.3)
        text = status_text(client)
    return text


def test_finetune_streams_progress_saves_and_the_model_classifies(ft_client, finetune_server, tmp_path):
    job = ft_client.submit(**finetune_args(separable_csv(tmp_path / "weather.csv"), "weather-model"),
                           api_name="/finetune")
    status, loss_curve, metrics, confusion, zip_file = job.result(timeout=300)
    streamed = [output[0] for output in job.outputs()]
    assert any("Step" in text for text in streamed), "progress should stream while training"
    assert "saved as 'weather-model'" in status and "(finished)" in status
    assert {"train", "validation"} <= {row[2] for row in loss_curve["data"]}
    accuracy = {row[0]: row for row in metrics["data"]}["accuracy"]
    assert float(accuracy[2]) >= 0.9
    assert "Confusion matrix" in confusion and "sunny" in confusion
    assert zip_file and zip_file.endswith(".zip")
    assert (finetune_server.models_dir / "weather-model" / "README.md").is_file()
    scores = ft_client.predict(text_value="a dog sees the bright moon and a warm bread",
                               model_name="weather-model", api_name="/classify")
    assert scores["label"] == "sunny"


def test_a_second_start_is_refused_as_busy_and_cancel_offers_save_or_discard(ft_client, finetune_server,
                                                                           tmp_path):
    data = separable_csv(tmp_path / "long.csv", rows_per_class=200)
    ft_client.submit(**finetune_args(data, "long-run", n_epochs=20, batch=2), api_name="/finetune")
    wait_for_live_step(ft_client, "long-run")
    with pytest.raises(Exception, match="Busy: 'long-run' is training \\(step"):
        ft_client.predict(**finetune_args(data, "second-run"), api_name="/finetune")
    ft_client.predict(api_name="/finetune_cancel")
    cancelled = wait_for_state(ft_client, "cancelled", timeout=30)
    assert "save what was trained, or discard it" in cancelled
    ft_client.predict(api_name="/finetune_discard")
    assert "(idle)" in status_text(ft_client)
    assert not (finetune_server.models_dir / "long-run").exists()
    assert not (finetune_server.models_dir / "second-run").exists()


def test_a_cancelled_run_can_be_saved_and_is_listed(ft_client, finetune_server, tmp_path):
    data = separable_csv(tmp_path / "long.csv", rows_per_class=200)
    ft_client.submit(**finetune_args(data, "partial-run", n_epochs=20, batch=2), api_name="/finetune")
    wait_for_live_step(ft_client, "partial-run")
    ft_client.predict(api_name="/finetune_cancel")
    wait_for_state(ft_client, "cancelled", timeout=30)
    ft_client.predict(api_name="/finetune_save")
    assert "Saved the partly trained model as 'partial-run'" in status_text(ft_client)
    assert ft_client.predict(text_value="the old bridge", model_name="partial-run",
                             api_name="/classify")["label"] in {"sunny", "rainy"}


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"text,label\nonly one class,a\nanother,a\n", "2 classes|two classes|at least 2"),
])
def test_a_bad_upload_is_refused_and_nothing_starts(ft_client, tmp_path, content, message):
    before = status_text(ft_client)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(Exception, match=message):
        ft_client.predict(**finetune_args(bad, "never-made"), api_name="/finetune")
    assert status_text(ft_client) == before


def test_an_existing_or_unsafe_name_is_refused(ft_client, tmp_path):
    data = separable_csv(tmp_path / "w.csv")
    with pytest.raises(Exception, match="already exists"):
        ft_client.predict(**finetune_args(data, "tiny-gpt2"), api_name="/finetune")
    with pytest.raises(Exception, match="Name the new model"):
        ft_client.predict(**finetune_args(data, "../escape"), api_name="/finetune")


def test_the_preview_shows_sizes_label_counts_token_lengths_and_first_rows(ft_client, tmp_path):
    data = separable_csv(tmp_path / "weather.csv", rows_per_class=40)
    summary, table = ft_client.predict(
        task_value="classification", path=handle_file(str(data)), validation_path=None, text_col="text",
        label_col="label", share=0.25, base="tiny-bert-sentiment", api_name="/finetune_preview")
    assert "**60** training rows, **20** validation rows" in summary  # 80 rows, a quarter held out
    assert "Labels: rainy: 30, sunny: 30." in summary  # stratified
    assert "Tokens per text:" in summary  # measured with the base model's tokenizer
    assert table["visible"] and table["value"]["headers"] == ["text", "label"]
    rows = table["value"]["data"]
    assert len(rows) == 5 and all(text in data.read_text() for text, _ in rows)
    assert {label for _, label in rows} == {"sunny", "rainy"}  # label names, not ids
