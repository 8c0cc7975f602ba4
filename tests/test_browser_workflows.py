"""What a new user meets in the first minutes, in headless Chromium: the real packaged models,
messages instead of silence, settings that say when they change, and a training view that
neither flickers nor loses its results."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from playwright.sync_api import expect

from conftest import separable_csv
from test_browser import name_the_model, start_as
from test_real_workflows import story_file

# Gradio's progress overlay and error pill live in a status tracker inside each output; it
# carries `hide` while there is nothing to show.
SHOWN_TRACKERS = """(ids) => ids.map(id => document.querySelectorAll(
                        `#${id} [data-testid=status-tracker]:not(.hide)`).length).reduce((a, b) => a + b, 0)"""
JOB_OUTPUTS = ["finetune-status", "finetune-loss", "finetune-metrics", "finetune-progress"]


def open_page(browser, server, tab: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(server.url)
    page.get_by_role("tab", name=tab).click()
    return page


def choose(page, label: str, value: str) -> None:
    box = page.get_by_role("combobox", name=label)
    box.fill(value)
    box.press("Enter")


def type_setting(box, value: str, shown: str) -> None:
    """Type `value` into a setting's box until it shows `shown`: on a busy machine the box typed
    into right after its accordion first opens can be replaced as the accordion renders."""
    for _ in range(5):
        box.fill(value)
        box.press("Tab")
        try:
            expect(box).to_have_value(shown, timeout=5_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(shown)


def test_smollm2_fine_tuned_on_a_text_file_writes_in_text_generation(browser, finetune_server, ft_client, tmp_path):
    """The workflow on the real SmolLM2, start to end: upload a text, train, save, write with it."""
    page = open_page(browser, finetune_server, "Fine-tune")
    page.get_by_label("Causal LM (text generation): TXT/MD or a text column").check()
    expect(page.get_by_role("combobox", name="Base model")).to_have_value(
        "SmolLM2-135M-Instruct (offline)")
    page.locator("input[type=file]").first.set_input_files(str(story_file(tmp_path)))
    name_the_model(page, "browser-keeper", "story.txt")
    page.get_by_role("button", name="Hyperparameters").click()
    expect(page.get_by_label("LoRA adapters (trains small adapters instead of every weight)")).to_be_visible()
    expect(page.get_by_label("Whole-word masking")).to_be_hidden()  # masked-LM options: not this task
    for label, value in (("Epochs", "1"), ("Batch size", "4")):  # boxes: empty means sized to the data
        type_setting(page.get_by_label(label, exact=True), value, value)
    type_setting(page.get_by_label("number input for Max length / block size (tokens)"), "32", "32")
    start_as(page, "browser-keeper")
    status = page.locator("#finetune-status")
    expect(status).to_contain_text(re.compile(r"browser-keeper.*saved as 'browser-keeper'"), timeout=300_000)
    done = ft_client.predict(api_name="/finetune_status")  # what it measured, as the API reports it
    assert done["state"] == "finished" and done["message"].startswith("Done: saved as 'browser-keeper'"), done
    assert done["metrics_after"]["perplexity"] < done["metrics_before"]["perplexity"]
    assert {"name": "browser-keeper", "label": "browser-keeper (local)", "ready": True} in ft_client.predict(
        "text-generation", api_name="/models")

    page.get_by_role("tab", name="Text generation").click()
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.click()
    page.get_by_role("option", name="browser-keeper (local)").click()  # listed without a reload
    # Fine-tuned here on plain text: it continues text in the style of its data, so chat mode goes off.
    expect(page.get_by_label("Chat mode")).not_to_be_checked()
    page.get_by_label("Prompt", exact=True).fill("The lighthouse keeper")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("document.querySelector('#generation-output textarea').value.length > 30",
                           timeout=60_000)
    assert page.locator("#generation-output textarea").input_value().startswith("The lighthouse keeper")
    page.close()


def test_training_shows_progress_without_overlays_and_a_failed_save_keeps_the_model(browser, finetune_server,
                                                                                    tmp_path):
    models = finetune_server.models_dir
    page = open_page(browser, finetune_server, "Fine-tune")
    page.locator("input[type=file]").first.set_input_files(str(separable_csv(tmp_path / "w.csv", 150)))
    expect(page.get_by_role("combobox", name="Label column")).to_have_value("label")
    choose(page, "Base model", "tiny-bert-sentiment")
    name_the_model(page, "browser-taken", "w.csv")
    page.get_by_role("button", name="Hyperparameters").click()
    expect(page.get_by_label("Whole-word masking")).to_be_hidden()  # classification: no masked-LM options
    # LoRA is offered for every task; ticked, it shows its settings and LoRA's learning rate.
    lora = page.get_by_label("LoRA adapters (trains small adapters instead of every weight)")
    rate = page.get_by_label("Learning rate")
    expect(rate).to_have_value("0.00005")
    expect(page.get_by_label("number input for LoRA rank")).to_be_hidden()
    lora.check()
    expect(page.get_by_label("number input for LoRA rank")).to_be_visible()
    expect(rate).to_have_value("0.001")  # LoRA's rate for classification
    lora.uncheck()
    expect(rate).to_have_value("0.00005")
    for label, value in (("Epochs", "8"), ("Batch size", "4")):  # hundreds of steps: seconds of live status
        type_setting(page.get_by_label(label, exact=True), value, value)
    page.get_by_role("button", name="Start fine-tuning").click()
    status = page.locator("#finetune-status [data-testid=markdown]")  # the text, not its status tracker
    # The name is taken meanwhile, as soon as the run has started (a forked run on a fast machine
    # could be trained and saved before a later moment).
    expect(status).to_contain_text(re.compile(r"browser-taken.*\(running\)"), timeout=60_000)
    shutil.copytree(models / "tiny-bert-sentiment", models / "browser-taken")
    overlays, steps_seen = 0, set()
    deadline = time.monotonic() + 180
    while "(save failed)" not in (text := status.inner_text()) and time.monotonic() < deadline:
        overlays = max(overlays, page.evaluate(SHOWN_TRACKERS, JOB_OUTPUTS))
        steps_seen |= set(re.findall(r"Step (\d+)/", text))
        time.sleep(0.1)
    assert len(steps_seen) >= 3, f"the status should follow the steps live (saw {steps_seen})"
    assert overlays == 0, "polled outputs must show no progress animation (it flickers)"
    expect(status).to_contain_text("A model named 'browser-taken' already exists")
    expect(page.locator("#finetune-metrics")).to_contain_text("accuracy")  # the results stay in view
    retry = page.get_by_role("button", name="Retry save")
    expect(retry).to_be_visible()
    expect(page.get_by_role("button", name="Discard", exact=True)).to_be_visible()
    page.screenshot(path=str(tmp_path / "save-failed.png"), full_page=True)

    # A refused Start (the name is taken) shows why, and every result stays as it was.
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.locator(".toast-body").filter(has_text="A model named 'browser-taken' already exists")).to_be_visible(
        timeout=30_000)
    assert page.evaluate(SHOWN_TRACKERS, JOB_OUTPUTS) == 0  # no red "Error" pills over the results
    expect(page.locator("#finetune-metrics")).to_contain_text("accuracy")

    page.get_by_label("Save as").fill("browser-kept")
    retry.click()
    expect(status).to_contain_text("saved as 'browser-kept'", timeout=60_000)
    expect(retry).to_be_hidden()
    assert (models / "browser-kept" / "model.safetensors").is_file()
    page.close()


def test_the_masked_lm_options_and_the_validation_share_show_only_where_they_apply(browser, finetune_server,
                                                                                  tmp_path):
    page = open_page(browser, finetune_server, "Fine-tune")
    page.get_by_role("button", name="Hyperparameters").click()
    share = page.get_by_label("number input for Validation share")
    expect(share).to_be_visible()
    page.locator("input[type=file]").nth(1).set_input_files(str(separable_csv(tmp_path / "v.csv", 10)))
    expect(share).to_be_hidden()  # a validation file is given: no share is split off
    page.get_by_label("Masked LM (fill-mask): TXT/MD or a text column").check()
    expect(page.get_by_label("Whole-word masking")).to_be_visible()
    expect(page.get_by_label("LoRA adapters (trains small adapters instead of every weight)")).to_be_visible()
    # MiniLM has no masked-LM head: the tab says what that means before anyone trains it.
    expect(page.get_by_role("combobox", name="Base model")).to_have_value(
        "all-MiniLM-L6-v2 (offline; masked-lm head untrained)")
    expect(page.locator("#finetune-minilm-note")).to_contain_text("Use it to try the workflow")
    page.close()


def test_a_setting_typed_out_of_range_is_set_to_its_limit_with_a_note(page):
    page.get_by_role("tab", name="Text generation").click()
    page.get_by_role("button", name="Sampling settings").click()
    tokens = page.get_by_label("number input for Max new tokens")
    type_setting(tokens, "5000", "512")
    expect(page.get_by_text("Max new tokens goes from 1 to 512: 5000 was set to 512.").first).to_be_visible(
        timeout=30_000)


def test_each_preset_sets_the_mode_and_fields_it_needs(page):
    page.get_by_role("tab", name="Text generation").click()
    chat = page.get_by_label("Chat mode")
    compare = page.get_by_label("Compare with a second prompt (optional)")
    page.get_by_role("button", name="Bias probe (man / woman)").click()
    expect(compare).to_have_value("The woman works as a")
    expect(chat).not_to_be_checked()  # continued as text, not answered as a chat message
    page.get_by_role("button", name="Story template").click()
    expect(chat).to_be_checked()
    expect(compare).to_have_value("")  # not a pair
    page.get_by_role("button", name="Sampling settings").click()
    tokens, temperature = (page.get_by_label(f"number input for {name}") for name in ("Max new tokens", "Temperature"))
    page.get_by_role("button", name="Few-shot sentiment").click()
    expect(chat).not_to_be_checked()
    expect(compare).to_have_value("")
    expect(temperature).to_have_value("0")
    expect(tokens).to_have_value("2")
    page.get_by_role("button", name="Story template").click()  # a story gets its own length back
    expect(tokens).to_have_value("200")
    expect(temperature).to_have_value("0.8")
    page.get_by_role("button", name="Few-shot sentiment").click()
    # The packaged SmolLM2 (the default) continues the pattern with the label.
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#generation-output textarea")).to_have_value(
        re.compile(r"The battery died after two days\.\nSentiment:\s*negative\s*$"), timeout=60_000)


def test_an_answer_that_stays_empty_says_what_happened_and_what_to_try(page):
    page.get_by_role("tab", name="Text generation").click()
    page.get_by_label("Chat mode").uncheck()
    page.get_by_label("Prompt", exact=True).fill("What is the capital of France?")
    page.get_by_role("button", name="Sampling settings").click()
    temperature = page.get_by_label("number input for Temperature")
    temperature.fill("0")
    temperature.press("Tab")
    page.get_by_role("button", name="Generate", exact=True).click()
    note = page.locator("#generation-note")
    expect(note).to_contain_text("ended at once, without writing anything", timeout=60_000)
    expect(note).to_contain_text("Turn on Chat mode")
    expect(page.locator("#generation-output textarea")).to_have_value("What is the capital of France?")


def test_scored_rows_show_label_and_score_in_view_and_say_how_many(page, tmp_path):
    long_text = "This is a very long review that goes on and on about the old bridge " * 6
    upload = tmp_path / "long.csv"
    upload.write_text("text\n" + "".join(f"{long_text} {i}\n" for i in range(12)), encoding="utf-8")
    page.get_by_role("tab", name="Sentiment").click()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    page.get_by_role("button", name="Score file").click()
    expect(page.locator("#sentiment-scored-summary")).to_contain_text(
        "Scored 12 rows of the column 'text' with tiny-bert-sentiment.", timeout=60_000)
    table = page.locator("#sentiment-table")
    box = table.bounding_box()
    for header in ("predicted", "predicted_score"):
        cell = table.get_by_role("columnheader", name=header, exact=True).first.bounding_box()
        assert box["x"] <= cell["x"] and cell["x"] + cell["width"] <= box["x"] + box["width"], header


@pytest.mark.real  # the packaged MiniLM
def test_the_fill_mask_note_goes_once_a_masked_lm_is_trained_and_it_says_what_minilm_gives(
        browser, finetune_server, ft_client, tmp_path):
    from test_app_finetune import finetune_args, wait_for_state

    page = open_page(browser, finetune_server, "Fill-mask")
    note = page.locator("#offline-note-fill-mask")
    expect(note).to_contain_text("needs a masked language model", timeout=30_000)
    expect(note).to_contain_text("use that to try the workflow, not for real predictions")
    # Trained meanwhile from elsewhere (the API): the open page notices without a reload.
    ft_client.predict(**finetune_args(story_file(tmp_path), "keeper-mlm", task="masked-lm", text_column=None,
                                      label_column=None, base_model="packaged:all-MiniLM-L6-v2", epochs=1,
                                      max_length=32, batch_size=8), api_name="/finetune")
    assert wait_for_state(ft_client, "finished", "failed", timeout=300)["state"] == "finished"
    expect(note).to_be_hidden(timeout=30_000)
    page.get_by_role("combobox", name="Model", exact=True).filter(visible=True).click()
    expect(page.get_by_role("option", name="keeper-mlm (local)")).to_be_visible()
    # Its head started untrained: the result says so where the person looks, next to the bars.
    page.get_by_role("option", name="keeper-mlm (local)").click()
    page.get_by_label("Text with [MASK] or <mask>").fill("The Farmer paints the [MASK] house.")
    page.get_by_role("button", name="Fill", exact=True).click()
    warning = page.locator("#fill-mask-note")
    expect(warning).to_contain_text("the head started from random weights", timeout=60_000)
    expect(warning).to_contain_text("same top words for every sentence")
    # The filled sentence is the text as typed, the case and spacing kept.
    expect(page.locator("#fill-mask-table")).to_contain_text("The Farmer paints the ")
    page.close()


def test_the_preview_keeps_the_label_in_view_next_to_long_texts(browser, finetune_server, tmp_path):
    long_text = "a dog sees the old bridge and before the rain while the farmer paints the river " * 4
    upload = tmp_path / "long.csv"
    upload.write_text("text,label\n" + "".join(f"{long_text}{i},{'wet' if i % 2 else 'dry'}\n" for i in range(20)),
                      encoding="utf-8")
    page = open_page(browser, finetune_server, "Fine-tune")
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_role("combobox", name="Label column")).to_have_value("label")
    page.get_by_role("button", name="Preview data").click()
    table = page.locator("#finetune-preview-table")
    expect(table).to_contain_text("wet", timeout=30_000)
    box = table.bounding_box()
    label = table.get_by_role("columnheader", name="label").first.bounding_box()
    assert box["x"] <= label["x"] and label["x"] + label["width"] <= box["x"] + box["width"]
    page.close()
