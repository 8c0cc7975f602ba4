"""Fine-tuning as a person does it in the browser: upload, train, watch, then use the model."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request

from gradio_client import Client
import pytest
from playwright.sync_api import expect

from conftest import AppServer, separable_csv
from core.starter import STARTER_ON_REAL_TEXT
from test_app_finetune import finetune_args, wait_for_checkpoint
from test_browser import prepare_classification_run
from test_browser_workflows import open_page


def test_upload_train_watch_and_classify_with_the_new_model(browser, finetune_server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(finetune_server.url)
    page.get_by_role("tab", name="Fine-tune").click()
    prepare_classification_run(page, separable_csv(tmp_path / "weather.csv"), "browser-weather")
    page.get_by_role("button", name="Hyperparameters").click()
    page.get_by_label("Learning rate").fill("0.003")
    page.get_by_label("Epochs", exact=True).fill("8")
    page.get_by_label("Epochs", exact=True).press("Tab")
    page.get_by_role("button", name="Start fine-tuning").click()
    status = page.locator("#finetune-status")
    # This run's status (an earlier test's run may still be shown until it starts), then its progress.
    expect(status).to_contain_text("browser-weather", timeout=120_000)
    expect(status).to_contain_text("Step", timeout=120_000)  # progress (live, or the last step once done)
    # Reloading the page does not stop the job: the tab re-attaches to it.
    page.reload()
    page.get_by_role("tab", name="Fine-tune").click()
    expect(status).to_contain_text("browser-weather", timeout=30_000)
    expect(status).to_contain_text("saved as 'browser-weather'", timeout=300_000)
    expect(page.locator("#finetune-loss canvas, #finetune-loss svg").first).to_be_visible()
    expect(page.locator("#finetune-metrics")).to_contain_text("accuracy")

    page.get_by_role("tab", name="Sentiment").click()
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.click()
    page.get_by_role("option", name="browser-weather (local)").click()
    page.get_by_label("Text", exact=True).fill("a dog sees the bright moon and a warm bread")
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#sentiment-scores")).to_contain_text("sunny", timeout=60_000)
    page.close()


def test_a_saved_runs_name_gives_way_to_a_free_one_but_a_late_first_look_never_undoes_an_uploads(
        browser, finetune_server, tmp_path):
    page = open_page(browser, finetune_server, "Fine-tune")
    prepare_classification_run(page, separable_csv(tmp_path / "offered.csv", 10), "browser-offered")
    page.get_by_role("button", name="Hyperparameters").click()
    page.get_by_label("Epochs", exact=True).fill("1")
    page.get_by_label("Epochs", exact=True).press("Tab")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.locator("#finetune-status")).to_contain_text("saved as 'browser-offered'", timeout=120_000)
    # Its name is taken now: the box offers a free one for the next run.
    expect(page.get_by_label("Name of the new model")).to_have_value("browser-offered-2")
    page.close()

    # A page whose first look at the job arrives after an upload (a busy server): the queued
    # events, that first look among them, are held until the upload's proposal is shown.
    config = json.load(urllib.request.urlopen(finetune_server.url + "config"))
    on_load_or_timer = {dependency["id"] for dependency in config["dependencies"]
                        if {event for _, event in dependency["targets"]} & {"load", "tick"}}
    held, holding = [], [True]

    def hold_load_and_timer_events(route):
        if holding[0] and json.loads(route.request.post_data or "{}").get("fn_index") in on_load_or_timer:
            held.append(route)
        else:
            route.continue_()

    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.route("**/gradio_api/queue/join*", hold_load_and_timer_events)
    page.goto(finetune_server.url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("input[type=file]").first.set_input_files(str(separable_csv(tmp_path / "later.csv", 10)))
    box = page.get_by_label("Name of the new model")
    expect(box).to_have_value("later-classifier")
    assert held, "the page's first look at the job should be among the held events"
    holding[0] = False
    for route in held:
        route.continue_()
    expect(page.locator("#finetune-status")).to_contain_text("browser-offered")  # it has looked now
    expect(page.get_by_role("combobox", name="Label column")).to_have_value("label")
    assert box.input_value() == "later-classifier"
    page.close()


def test_a_run_killed_with_its_server_resumes_from_its_checkpoint_after_a_restart(browser, models_dir,
                                                                                  tmp_path):
    own_models = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", own_models / "tiny-bert-sentiment")
    data = separable_csv(tmp_path / "long.csv", rows_per_class=60)
    first = AppServer(["--models-dir", str(own_models)], log_path=tmp_path / "first.log").wait_until_serving()
    try:
        Client(first.url, verbose=False).submit(
            **finetune_args(data, "phoenix", epochs=3, batch_size=2, checkpoint_every=10), api_name="/finetune")
        wait_for_checkpoint(own_models, "phoenix")
    finally:
        first.process.kill()  # no clean shutdown: as if the machine lost power
        first.process.wait()
    assert not (own_models / "phoenix").exists()

    second = AppServer(["--models-dir", str(own_models)], log_path=tmp_path / "second.log").wait_until_serving()
    try:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(second.url)
        page.get_by_role("tab", name="Fine-tune").click()
        expect(page.locator("#finetune-interrupted")).to_be_visible()
        expect(page.get_by_label("Interrupted runs (resume from their last checkpoint)")).to_have_value(
            re.compile(r"phoenix: stopped at step \d+ of \d+"))
        page.get_by_role("button", name="Resume").click()
        status = page.locator("#finetune-status")
        expect(status).to_contain_text("Resum", timeout=30_000)
        expect(status).to_contain_text(re.compile(r"saved as 'phoenix' \(resumed from step [1-9]\d*0\)"),
                                       timeout=300_000)
        expect(page.locator("#finetune-interrupted")).to_be_hidden()
        page.close()
    finally:
        second.stop()
    assert not (own_models / ".checkpoints" / "phoenix").exists()  # nothing left behind
    assert (own_models / "phoenix" / "config.json").exists()


@pytest.mark.real  # the packaged MiniLM
def test_the_starter_sentiment_model_trains_in_one_click_and_classifies(browser, finetune_server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(finetune_server.url)
    page.get_by_role("tab", name="Sentiment").click()
    page.get_by_role("button", name="Starter sentiment model (no Hub needed)").click()
    # Before training it, the person reads what it is good for, as measured on real text.
    expect(page.get_by_text("On real-world text it was not written with")).to_contain_text(STARTER_ON_REAL_TEXT)
    page.get_by_role("button", name="Train the starter model").click()
    status = page.locator("#starter-status")
    expect(status).to_contain_text("saved as 'starter-sentiment'", timeout=180_000)
    expect(status).to_contain_text("It is selected above")
    # Precision is automatic, and the status names it (bf16 for MiniLM where the CPU has fast bf16:
    # both kinds of CPU are test_core_training.py's, on every machine).
    expect(status).to_contain_text(re.compile(r"trained in (bf16 mixed precision|float32)"))
    expect(status).to_contain_text(re.compile(r"Accuracy on held-out sentences: (9\d|100)%"))
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    expect(picker).to_have_value("starter-sentiment (local)")
    page.get_by_label("Text", exact=True).fill("The staff were wonderful and the food was delicious.")
    page.get_by_role("button", name="Classify", exact=True).click()
    scores = page.locator("#sentiment-scores")
    expect(scores).to_contain_text("neutral", timeout=60_000)  # all three classes are shown
    expect(scores.locator("h2, .output-class").first).to_contain_text("positive")
    assert (finetune_server.models_dir / "starter-sentiment" / "config.json").is_file()
    # Nothing left to do: the button says so, now and after a reload.
    ready = page.get_by_role("button", name="Trained: 'starter-sentiment' is in the Model list above")
    expect(ready).to_be_disabled()
    page.reload()
    page.get_by_role("tab", name="Sentiment").click()
    page.get_by_role("button", name="Starter sentiment model (no Hub needed)").click()
    expect(ready).to_be_disabled()
    # Measured against a labelled file: the real MiniLM classifier, all three of its classes.
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.fill("starter-sentiment")
    picker.press("Enter")
    expect(picker).to_have_value("starter-sentiment (local)")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\nThe service was excellent and quick,positive\nMy order arrived broken,negative\n"
                        "The meeting is at noon,neutral\nI really enjoyed the concert,positive\n"
                        "The room was dirty and loud,negative\nThe shop opens on Monday,neutral\n", encoding="utf-8")
    page.locator("input[type=file]").first.set_input_files(str(labelled))
    expect(page.get_by_label("Gold label column")).to_have_value("label", timeout=30_000)
    page.get_by_role("button", name="Score file").click()
    evaluation = page.locator("#sentiment-evaluation")
    expect(evaluation).to_contain_text("Measured against the gold labels of 'label' (6 rows)", timeout=60_000)
    expect(evaluation).not_to_contain_text("does not have")  # the file's labels are the model's classes
    expect(page.locator("#sentiment-confusion td")).to_have_count(9)
    expect(page.locator("#sentiment-report")).to_contain_text("neutral")
    page.close()


def test_epochs_and_batch_size_start_sized_to_the_data_and_the_preview_says_what_they_come_to(
        browser, finetune_server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(finetune_server.url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("button", name="Hyperparameters").click()
    epochs, batch = page.get_by_label("Epochs", exact=True), page.get_by_label("Batch size", exact=True)
    expect(epochs).to_have_value("0")  # 0: sized to the data
    expect(batch).to_have_value("0")
    page.get_by_label("Causal LM (text generation): TXT/MD or a text column").check()
    base_model = page.get_by_role("combobox", name="Base model")
    expect(base_model).to_have_value(re.compile("SmolLM2"))  # the task's own first choice
    # A busy server: the page's answer to the upload (it clears an old preview) arrives only
    # after Preview was pressed and has answered. It is held here until then.
    held, holding = [], [True]

    def hold_the_answer_to_the_upload(route):
        if holding[0] and "notes.txt" in (route.request.post_data or ""):
            held.append(route)
        else:
            route.continue_()

    page.route("**/gradio_api/run/predict*", hold_the_answer_to_the_upload)
    notes = tmp_path / "notes.txt"
    notes.write_text("the farmer paints the old bridge before the rain.\n" * 30, encoding="utf-8")
    with page.expect_request(lambda request: "run/predict" in request.url
                             and "notes.txt" in (request.post_data or "")):
        page.locator("#finetune-train-file input[type=file]").set_input_files(str(notes))
    base_model.fill("tiny-gpt2")
    base_model.press("Enter")
    page.get_by_role("button", name="Preview data").click()
    preview = page.locator("#finetune-preview")
    expect(preview).to_contain_text("Estimated time on this machine", timeout=180_000)
    expect(preview).to_contain_text("sized to the data")
    assert held, "the page's answer to the upload (and, late, to the task) should have been held until now"
    holding[0] = False
    for route in held:
        route.continue_()
    expect(page.get_by_label("Name of the new model")).to_have_value(re.compile("^notes-writer"))  # answered
    # The preview of this very file stays; the boxes stay at 0 (sized) and say what the sizing
    # came to for this data.
    expect(preview).to_contain_text("Estimated time on this machine")
    expect(page.locator("#finetune-preview-table")).to_be_visible()
    expect(epochs).to_have_value("0")
    expect(page.locator("#finetune-tab-epochs")).to_contain_text(re.compile(r"This data, sized: \d+\."))
    expect(page.locator("#finetune-tab-batch")).to_contain_text(re.compile(r"This data, sized: \d+\."))
    # Another task is other data: its preview is gone, and the boxes no longer quote the old one.
    page.get_by_label("Masked LM (fill-mask): TXT/MD or a text column").check()
    expect(page.get_by_label("Name of the new model")).to_have_value(re.compile("^notes-fill-mask"))  # answered
    expect(preview).not_to_contain_text("Estimated time on this machine")
    expect(page.locator("#finetune-preview-table")).to_be_hidden()
    expect(page.locator("#finetune-tab-epochs")).not_to_contain_text("This data, sized")
    expect(page.locator("#finetune-tab-batch")).not_to_contain_text("This data, sized")
    page.close()
