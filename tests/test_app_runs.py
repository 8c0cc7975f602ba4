"""The run history, model renaming and deleting, and adapter-only saves, through the API of a
real app server (its own models folder, shared with the other fine-tuning tests)."""

from __future__ import annotations

import json

import pytest

from conftest import separable_csv
from core.history import HISTORY_FILE
from test_app_finetune import cancel_while_training, finetune_args, wait_for_state


def run_of(client, model_name: str) -> dict:
    """The newest history entry of `model_name`."""
    return next(run for run in client.predict(api_name="/runs") if run["model_name"] == model_name)


def test_every_ended_run_is_in_the_history_with_what_it_trained_and_measured(ft_client, finetune_server, tmp_path):
    data = separable_csv(tmp_path / "weather.csv")
    # With checkpoints, the run keeps its own copy of the upload: under the name it was uploaded with.
    ft_client.predict(**finetune_args(data, "history-done", epochs=6, checkpoint_every=5), api_name="/finetune")
    done_status = wait_for_state(ft_client, "finished", "failed", timeout=300)
    assert "Kept the" in done_status["message"] and "epoch" in done_status["message"]  # which epoch was saved
    cancel_while_training(ft_client, separable_csv(tmp_path / "long.csv", rows_per_class=200), "history-cancelled")
    ft_client.predict(api_name="/finetune_discard")
    with pytest.raises(Exception, match="no-such-local-model"):  # refused before it starts: no run
        ft_client.predict(**finetune_args(data, "never-ran", base_model="no-such-local-model"), api_name="/finetune")
    ft_client.predict(**finetune_args(data, "history-failed", lora=True, lora_target_modules="no_such_layer"),
                      api_name="/finetune")
    wait_for_state(ft_client, "failed", "finished")

    runs = ft_client.predict(api_name="/runs")
    names = [run["model_name"] for run in runs]
    assert names.index("history-failed") < names.index("history-cancelled") < names.index("history-done")
    done = run_of(ft_client, "history-done")
    assert done["state"] == "finished" and done["saved_as"] == "history-done"
    assert done["task"] == "classification" and done["base_model"] == "tiny-bert-sentiment"
    assert done["data"].startswith("weather.csv: 60 train / 20 validation rows")
    assert done["settings"]["epochs"] == 6 and done["settings"]["learning_rate"] == 3e-3
    assert done["metrics_after"]["accuracy"] > done["metrics_before"]["accuracy"]
    assert done["kept"]["evaluations"] == 6 and done["seconds"] > 0
    assert {"train", "validation"} <= {point["series"] for point in done["loss_curve"]}
    cancelled = run_of(ft_client, "history-cancelled")
    assert cancelled["state"] == "discarded" and cancelled["stopped"] and cancelled["saved_as"] is None
    failed = run_of(ft_client, "history-failed")
    assert failed["state"] == "failed" and "no_such_layer" in failed["message"]
    assert "never-ran" not in names
    # Kept in the models folder, where the next server finds it.
    on_disk = json.loads((finetune_server.models_dir / HISTORY_FILE).read_text())
    assert {"history-done", "history-cancelled", "history-failed"} <= {run["model_name"] for run in on_disk}


def test_a_saved_model_is_renamed_and_deleted_and_the_history_follows(ft_client, finetune_server, tmp_path):
    models = finetune_server.models_dir
    ft_client.predict(**finetune_args(separable_csv(tmp_path / "w.csv"), "to-rename", epochs=2), api_name="/finetune")
    wait_for_state(ft_client, "finished", "failed", timeout=300)
    assert ft_client.predict(text="the moon", model="to-rename", api_name="/classify")["label"]  # loaded, cached
    assert "Renamed 'to-rename' to 'renamed'" in ft_client.predict("to-rename", "renamed", api_name="/rename_model")
    assert not (models / "to-rename").exists() and (models / "renamed" / "config.json").is_file()
    assert run_of(ft_client, "to-rename")["saved_as"] == "renamed"
    with pytest.raises(Exception, match="Cannot load 'to-rename'"):  # not served from the cache either
        ft_client.predict(text="the moon", model="to-rename", api_name="/classify")
    assert ft_client.predict(text="the moon", model="renamed", api_name="/classify")["label"]
    for name, new, message in (("renamed", "tiny-gpt2", "already exists"), ("renamed", "../out", "Name the new"),
                               ("../tiny-gpt2", "x", "no model named"), ("missing", "x", "no model named")):
        with pytest.raises(Exception, match=message):
            ft_client.predict(name, new, api_name="/rename_model")
    assert "Deleted 'renamed'" in ft_client.predict("renamed", api_name="/delete_model")
    assert not (models / "renamed").exists() and not list(models.glob(".renamed*"))
    assert run_of(ft_client, "to-rename")["saved_as"] is None
    assert "renamed" not in [model["name"] for model in ft_client.predict("text-classification", api_name="/models")]
    with pytest.raises(Exception, match="Cannot load 'renamed'"):
        ft_client.predict(text="the moon", model="renamed", api_name="/classify")
    with pytest.raises(Exception, match="no model named"):
        ft_client.predict("..", api_name="/delete_model")
    assert (models / "tiny-gpt2").is_dir()


def test_an_adapter_only_save_from_the_tab_classifies_and_protects_its_base(ft_client, finetune_server, tmp_path):
    models = finetune_server.models_dir
    ft_client.predict(**finetune_args(separable_csv(tmp_path / "w.csv"), "weather-adapter", lora=True,
                                      lora_save="adapter", learning_rate=2e-2, epochs=10), api_name="/finetune")
    status = wait_for_state(ft_client, "finished", "failed", timeout=300)
    assert status["state"] == "finished", status
    assert (models / "weather-adapter" / "adapter_model.safetensors").is_file()
    assert not (models / "weather-adapter" / "model.safetensors").exists()
    assert ft_client.predict(text="a dog sees the bright moon and a warm bread", model="weather-adapter",
                             api_name="/classify")["label"] == "sunny"
    with pytest.raises(Exception, match="base of the LoRA adapter 'weather-adapter'"):
        ft_client.predict("tiny-bert-sentiment", api_name="/delete_model")
    assert (models / "tiny-bert-sentiment").is_dir()
    assert "Deleted" in ft_client.predict("weather-adapter", api_name="/delete_model")


def test_a_run_logged_to_tensorboard_from_the_tab_leaves_its_events_in_the_models_folder(ft_client, finetune_server,
                                                                                         tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ft_client.predict(**finetune_args(separable_csv(tmp_path / "w.csv"), "logged-run", epochs=2,
                                      report_to="tensorboard"), api_name="/finetune")
    status = wait_for_state(ft_client, "finished", "failed", timeout=300)
    logs = finetune_server.models_dir / ".tensorboard"
    assert f"tensorboard --logdir {logs}" in status["message"], status
    (run_folder,) = [folder for folder in logs.iterdir() if folder.name.startswith("logged-run-")]
    events = EventAccumulator(str(run_folder)).Reload()
    assert [point.step for point in events.Scalars("train/loss")] == list(range(1, status["total_steps"] + 1))
