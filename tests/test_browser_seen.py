"""What two new users saw wrong, checked in Chromium: tables that tell the model's columns from
the file's, pickers that follow the models folder, outputs that name their model, a seed that
can be read back, a Fine-tune tab that starts where the last session ended, and a page that
works at a phone's width."""

from __future__ import annotations

import shutil

from playwright.sync_api import expect

from conftest import AppServer
from test_browser import open_generation_with_tiny_model, open_tab

PHONE = {"width": 390, "height": 844}
TABS = ["Text generation", "Sentiment", "Fill-mask", "Fine-tune", "Question answering", "Inside the model"]


def test_a_files_label_column_is_shown_as_gold_next_to_the_models_prediction(page, tmp_path):
    upload = tmp_path / "tweets.csv"
    upload.write_text("text,label\nthe bright moon,positive\nthe old bridge,negative\na warm bread,positive\n",
                      encoding="utf-8")
    open_tab(page, "Sentiment")
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_label("Gold label column")).to_have_value("label", timeout=30_000)
    page.get_by_role("button", name="Score file").click()
    expect(page.locator("#sentiment-scored-summary")).to_contain_text("next to the file's gold labels in 'label'",
                                                                      timeout=60_000)
    table = page.locator("#sentiment-table")
    expect(table.get_by_role("columnheader", name="predicted_matches_gold").first).to_be_visible()
    headers = [header.strip() for header in table.get_by_role("columnheader").all_inner_texts() if header.strip()]
    assert headers[:4] == ["predicted", "label", "predicted_matches_gold", "predicted_score"], headers


def test_every_picker_follows_the_models_folder_and_every_output_names_its_model(page, models_dir):
    open_generation_with_tiny_model(page)
    shutil.copytree(models_dir / "tiny-gpt2", models_dir / "zz-late-writer")
    shutil.copytree(models_dir / "tiny-bert-sentiment", models_dir / "zz-late-judge")
    try:
        page.get_by_role("button", name="↻ Refresh models").filter(visible=True).click()
        compare = page.get_by_role("combobox", name="Compare with a second model").filter(visible=True)
        compare.click()
        expect(page.get_by_role("option", name="zz-late-writer (local)")).to_be_visible(timeout=30_000)
        page.get_by_role("option", name="zz-late-writer (local)").click()
        page.get_by_label("Chat mode").uncheck()
        page.get_by_label("Prompt", exact=True).fill("The student reads")
        page.get_by_role("button", name="Generate", exact=True).click()
        expect(page.get_by_label("Output: tiny-chat")).to_be_visible(timeout=30_000)
        expect(page.get_by_label("Second output: zz-late-writer, the same prompt")).to_be_visible()

        open_tab(page, "Sentiment")  # refreshed with the others: the late classifier is there too
        page.get_by_role("combobox", name="Compare with a second model").filter(visible=True).click()
        expect(page.get_by_role("option", name="zz-late-judge (local)")).to_be_visible(timeout=30_000)
        page.keyboard.press("Escape")
        page.get_by_label("Text", exact=True).fill("The garden was lovely.")
        page.get_by_role("button", name="Classify", exact=True).click()
        expect(page.locator("#sentiment-scores")).to_contain_text("tiny-bert-sentiment: classes and confidence",
                                                                  timeout=60_000)
    finally:
        shutil.rmtree(models_dir / "zz-late-writer")
        shutil.rmtree(models_dir / "zz-late-judge")


def test_a_random_seed_is_shown_and_gives_the_same_text_again(page):
    open_generation_with_tiny_model(page)
    page.get_by_label("Chat mode").uncheck()
    page.get_by_label("Prompt", exact=True).fill("The student reads")
    page.get_by_role("button", name="Sampling settings").click()
    seed = page.get_by_label("Seed", exact=True)
    expect(seed).to_have_value("-1")  # a new text each time, by default
    used = page.locator("#generation-seed-used input")
    output = page.locator("#generation-output textarea")
    page.get_by_role("button", name="Generate", exact=True).click()
    # Ended: the seed is shown, the text is there, and the output's status no longer says it is generating.
    page.wait_for_function("""() => document.querySelector('#generation-seed-used input').value !== ''
        && document.querySelector('#generation-output textarea').value !== ''
        && document.querySelector('#generation-output .wrap').classList.contains('hide')""", timeout=60_000)
    first_text, first_seed = output.input_value(), used.input_value()
    seed.fill(first_seed)
    seed.press("Enter")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(output).to_have_value(first_text, timeout=60_000)
    expect(used).to_have_value(first_seed)


def test_the_question_answering_highlight_never_cuts_a_word(page):
    open_tab(page, "Question answering")
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.fill("tiny-bert-qa")
    picker.press("Enter")
    context = "the farmer designed the red house. a dog reads a long book every day."
    page.get_by_label("Context").fill(context)
    page.get_by_label("Question").fill("what did the farmer design?")
    page.get_by_role("button", name="Answer", exact=True).click()
    marked = page.locator("#qa-context .textspan.hl, #qa-context mark, #qa-context [class*='hl']")
    expect(page.locator("#qa-spans")).to_contain_text("rank", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#qa-outcome').innerText.includes('span of the context')")
    highlighted = {text.strip() for text in marked.all_inner_texts() if text.strip()}
    assert highlighted, "the answer is marked in the context"
    for text in highlighted:
        cleaned = text.replace("answer", "").replace("other candidate", "").strip()
        start = context.find(cleaned)
        assert start >= 0, cleaned
        end = start + len(cleaned)
        assert (start == 0 or not context[start - 1].isalnum()) and (end == len(context) or not context[end].isalnum())


def test_a_new_server_picks_up_where_the_last_one_ended_and_fits_a_phone(browser, tmp_path):
    """A models folder that already has runs (a restart): the Fine-tune status says what the last
    run did, not "No training has run yet"; a new upload clears the old preview and proposes a
    free name. With no classifier ready, "Why this label" points to the Sentiment tab. At 390 px
    every tab is in view and every picker shows its model's whole name."""
    from core.history import RunHistory

    models = tmp_path / "models"
    (models / "weather-classifier").mkdir(parents=True)  # the name a weather.csv run would take
    RunHistory(models).record({"id": "1", "model_name": "old-notes", "task": "causal-lm", "state": "finished",
                               "message": "Done: saved as 'old-notes'; trained in float32.", "finished_at": 1.7e9,
                               "saved_as": "old-notes", "settings": {}, "loss_curve": []})
    server = AppServer(["--models-dir", str(models)], log_path=tmp_path / "app.log").wait_until_serving()
    page = browser.new_page(viewport=PHONE)
    page.set_default_timeout(30_000)
    try:
        page.goto(server.url)
        for number, tab in enumerate(TABS):
            page.get_by_role("tab", name=tab).click()  # every tab in view: none hides behind a menu
            pickers = page.get_by_role("combobox").filter(visible=True).all()  # models, columns, precision
            assert pickers, tab
            for picker in pickers:
                fits = picker.evaluate("box => box.scrollWidth <= box.clientWidth + 1")
                assert fits, f"{tab}: the picker cuts '{picker.input_value()}'"
            page.screenshot(path=str(tmp_path / f"phone-{number}.png"), full_page=True)
        assert page.viewport_size["width"] == 390
        # Only a chat model answers questions here: the panel says how often it was right, as measured.
        from core.measurements import measured

        figures = measured("qa_chat")
        open_tab(page, "Question answering")
        expect(page.locator("#qa-chat-note")).to_contain_text(
            f"Measured on {figures['questions']} questions about texts it had not seen, it was exactly right "
            f"{figures['right']} times")
        open_tab(page, "Inside the model")
        note = page.locator("#offline-note-text-classification").filter(visible=True).first
        expect(note).to_contain_text("the Sentiment tab's \"Starter sentiment model\"")
        open_tab(page, "Fine-tune")
        status = page.locator("#finetune-status")
        expect(status).to_contain_text("No training since the server started. The last run, old-notes (finished")
        upload = tmp_path / "weather.csv"
        upload.write_text("text,label\n" + "".join(f"day {i} sunny,{'a' if i % 2 else 'b'}\n" for i in range(20)),
                          encoding="utf-8")
        page.locator("#finetune-train-file input[type=file]").set_input_files(str(upload))
        expect(page.get_by_label("Name of the new model")).to_have_value("weather-classifier-2")  # the free name
        page.get_by_role("button", name="Preview data").click()
        preview = page.locator("#finetune-preview")
        expect(preview).to_contain_text("optimizer steps", timeout=120_000)
        page.get_by_label("Causal LM (text generation): TXT/MD or a text column").check()
        expect(preview).to_have_text("")  # the preview of the other task is gone
        expect(page.get_by_label("Name of the new model")).to_have_value("weather-writer")
    finally:
        page.close()
        server.stop()
