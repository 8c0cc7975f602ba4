"""Fine-tuning as a person does it in the browser: upload, train, watch, then use the model."""

from __future__ import annotations

from playwright.sync_api import expect

from test_app_finetune import separable_csv


def test_upload_train_watch_and_classify_with_the_new_model(browser, finetune_server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(finetune_server.url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("input[type=file]").first.set_input_files(str(separable_csv(tmp_path / "weather.csv")))
    expect(page.get_by_role("combobox", name="Label column")).to_have_value("label")
    page.get_by_role("combobox", name="Base model").fill("tiny-bert-sentiment")
    page.get_by_role("combobox", name="Base model").press("Enter")
    page.get_by_label("Name of the new model").fill("browser-weather")
    page.get_by_role("button", name="Hyperparameters").click()
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_role("button", name="Start fine-tuning").click()
    status = page.locator("#finetune-status")
    expect(status).to_contain_text("Step", timeout=120_000)  # live progress
    expect(status).to_contain_text("saved as 'browser-weather'", timeout=300_000)
    expect(page.locator("#finetune-loss canvas, #finetune-loss svg").first).to_be_visible()
    expect(page.locator("#finetune-metrics")).to_contain_text("accuracy")

    page.get_by_role("tab", name="Sentiment").click()
    picker = page.get_by_label("Model").filter(visible=True)
    picker.click()
    page.get_by_role("option", name="browser-weather (local)").click()
    page.get_by_label("Text", exact=True).fill("a dog sees the bright moon and a warm bread")
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#sentiment-scores")).to_contain_text("sunny", timeout=60_000)
    page.close()
