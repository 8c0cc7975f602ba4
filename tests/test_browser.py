"""What a person sees in a real headless Chromium: one or more checks per panel."""

from __future__ import annotations

import re
import shutil

from playwright.sync_api import expect

from core.precision import detected_hardware, forced_precision


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def name_the_model(page, name: str, uploaded: str) -> None:
    """Type the new model's name once the tab has proposed one for the file `uploaded` (a name
    typed before that proposal arrives would be replaced by it)."""
    box = page.get_by_label("Name of the new model")
    stem = re.escape(uploaded.rsplit(".", 1)[0])
    expect(box).to_have_value(re.compile(rf"^{stem}-(classifier|writer|fill-mask)(-\d+)?$"), timeout=30_000)
    box.fill(name)


def prepare_classification_run(page, csv_path, name: str, base: str = "tiny-bert-sentiment") -> None:
    """On the Fine-tune tab: upload a CSV with text and label columns, pick the base model and
    name the new model."""
    page.locator("input[type=file]").first.set_input_files(str(csv_path))
    expect(page.get_by_role("combobox", name="Label column")).to_have_value("label")
    page.get_by_role("combobox", name="Base model").fill(base)
    page.get_by_role("combobox", name="Base model").press("Enter")
    name_the_model(page, name, csv_path.name)


def start_as(page, name: str) -> None:
    """Press Start with the model named `name`: on a slow machine a proposal sent for an earlier
    change of the file or task can land after the name was typed (noted in the closing notes:
    the page cannot tell a stale proposal), so the name is typed again if it was replaced."""
    box = page.get_by_label("Name of the new model")
    if box.input_value() != name:
        box.fill(name)
    expect(box).to_have_value(name)
    page.get_by_role("button", name="Start fine-tuning").click()


def open_generation_with_tiny_model(page) -> None:
    """The tiny chat model: fast, so these tests check the page, not a real model's speed
    (the packaged SmolLM2 has its own tests)."""
    open_tab(page, "Text generation")
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.fill("tiny-chat")
    picker.press("Enter")


def test_generation_streams_text_into_the_output(page):
    open_generation_with_tiny_model(page)
    page.get_by_label("Prompt", exact=True).fill("The student reads")
    page.get_by_role("button", name="Sampling settings").click()
    tokens = page.get_by_label("number input for Max new tokens")
    tokens.fill("400")
    tokens.press("Enter")
    output = page.locator("#generation-output textarea")
    # Every value the output takes, recorded in the page itself: polling from the test could miss
    # the steps of a fast stream on a busy machine.
    page.evaluate("""() => { window.seenValues = new Set();
        const box = document.querySelector('#generation-output textarea');
        window.seenTimer = setInterval(() => { if (box.value) window.seenValues.add(box.value); }, 5); }""")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("() => document.querySelector('#generation-output textarea').value.length > 150 && "
                           "window.seenValues.size >= 2", timeout=60_000)
    page.get_by_role("button", name="Generate", exact=True).wait_for()  # the run has ended
    final = output.input_value()
    seen = page.evaluate("() => { clearInterval(window.seenTimer); return window.seenValues.size; }")
    assert seen >= 2, "the text should appear in several steps, not at once"
    assert len(final) > 150


def test_bias_probe_fills_both_prompts_and_answers_side_by_side(page):
    open_generation_with_tiny_model(page)
    page.get_by_role("button", name="Bias probe (man / woman)").click()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("The man works as a")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#generation-compare-output textarea').value.length > 0",
        timeout=60_000)
    assert page.locator("#generation-output textarea").input_value()


def test_sentiment_shows_each_class_with_its_confidence(page):
    open_tab(page, "Sentiment")
    page.get_by_label("Text", exact=True).fill("The garden was lovely.")
    page.get_by_role("button", name="Classify", exact=True).click()
    scores = page.locator("#sentiment-scores")
    expect(scores).to_contain_text("positive", timeout=60_000)
    expect(scores).to_contain_text("negative")
    expect(scores).to_contain_text("%")


def test_sentiment_scores_an_uploaded_csv(page, tmp_path):
    upload = tmp_path / "reviews.csv"
    upload.write_text("id,review\n1,I loved the old bridge\n2,The bread was cold\n", encoding="utf-8")
    open_tab(page, "Sentiment")
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_label("Text column")).to_have_value("review", timeout=30_000)
    page.get_by_role("button", name="Score file").click()
    table = page.locator("#sentiment-table")
    expect(table).to_contain_text("I loved the old bridge", timeout=60_000)
    expect(table).to_contain_text("The bread was cold")
    expect(page.get_by_label("Gold label column")).to_have_value("none: only score")  # no column of labels
    expect(page.locator("#sentiment-evaluation")).to_be_hidden()


def test_a_file_with_gold_labels_is_scored_and_measured_against_them(page, tmp_path):
    upload = tmp_path / "labelled.csv"
    upload.write_text("review,sentiment\nI loved the old bridge,positive\nThe bread was cold,negative\n"
                      "A warm and sunny garden,positive\nThe train was late again,negative\n"
                      "It was an ordinary day,neutral\n", encoding="utf-8")
    open_tab(page, "Sentiment")
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_label("Text column")).to_have_value("review", timeout=30_000)
    expect(page.get_by_label("Gold label column")).to_have_value("sentiment")  # guessed
    page.get_by_role("button", name="Score file").click()
    evaluation = page.locator("#sentiment-evaluation")
    expect(evaluation).to_contain_text("Measured against the gold labels of 'sentiment' (5 rows)", timeout=60_000)
    expect(evaluation).to_contain_text("macro-F1")
    expect(evaluation).to_contain_text("'neutral' (1 row)")  # the tiny model has no neutral class
    heatmap = page.locator("#sentiment-confusion table")
    expect(heatmap.locator("td")).to_have_count(9)  # negative, positive and neutral, gold x predicted
    expect(page.locator("#sentiment-per-class")).to_contain_text("support")
    expect(page.locator("#sentiment-report")).to_contain_text("macro avg")
    expect(evaluation).to_contain_text(re.compile(r"accuracy \d+\.\d%"))  # its value: tests/test_app_api.py
    page.screenshot(path=str(tmp_path / "gold-evaluation.png"), full_page=True)


def test_fill_mask_shows_predictions_as_bars_and_sentences(page):
    open_tab(page, "Fill-mask")
    page.get_by_label("Text with [MASK] or <mask>").fill("The cat [MASK] the red house.")
    page.get_by_role("button", name="Fill", exact=True).click()
    table = page.locator("#fill-mask-table")
    expect(table).to_contain_text("mask 1", timeout=60_000)
    expect(table).to_contain_text("The cat")  # the text as typed, with the word in place
    expect(page.locator("#fill-mask-bars canvas, #fill-mask-bars svg").first).to_be_visible()


def test_text_without_a_mask_shows_an_error_toast(page):
    open_tab(page, "Fill-mask")
    page.get_by_label("Text with [MASK] or <mask>").fill("There is no gap here.")
    page.get_by_role("button", name="Fill", exact=True).click()
    expect(page.get_by_text("The text has no mask")).to_be_visible(timeout=30_000)


def test_a_new_model_appears_in_the_picker_after_refresh(page, models_dir):
    open_tab(page, "Sentiment")
    shutil.copytree(models_dir / "tiny-bert-sentiment", models_dir / "zz-new-sentiment")
    try:
        page.get_by_role("button", name="↻ Refresh models").filter(visible=True).click()
        page.get_by_role("combobox", name="Model", exact=True).filter(visible=True).click()
        expect(page.get_by_role("option", name="zz-new-sentiment (local)")).to_be_visible(timeout=30_000)
    finally:
        shutil.rmtree(models_dir / "zz-new-sentiment")


def test_stop_ends_a_generation_midway(page):
    """Four sequences of 120 tokens stream together and take seconds; Stop right after the text
    appears must end all four well short of 120 tokens, and the output must stop changing. The
    default model (the packaged SmolLM2) is slow enough on a CPU for that; the tiny one may
    finish first."""
    open_tab(page, "Text generation")
    page.get_by_label("Prompt", exact=True).fill("The farmer")
    page.get_by_role("button", name="Sampling settings").click()
    for label, value in (("Max new tokens", "120"), ("Number of sequences", "4")):
        box = page.get_by_label(f"number input for {label}")
        box.fill(value)
        box.press("Enter")
    output = page.locator("#generation-output textarea")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        "() => (document.querySelector('#generation-output textarea').value.split('[4] ')[1] || '').length > 25",
        timeout=180_000)  # the packaged SmolLM2 loads first; a busy machine is slow
    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_timeout(500)
    stopped = output.input_value()
    page.wait_for_timeout(3000)
    assert output.input_value() == stopped
    sequences = re.split(r"\[\d\] ", stopped)[1:]
    assert len(sequences) == 4 and all(text.strip() for text in sequences)  # all four were written
    assert all(len(text.split()) < 60 for text in sequences)  # 120 tokens make about 90 words


def test_the_precision_a_model_computes_in_is_shown_next_to_it_and_can_be_forced(page):
    open_generation_with_tiny_model(page)
    shown = page.locator("#precision-text-generation")
    # Before tiny-chat is loaded the line says what automatic means here; an earlier test may
    # have loaded it already.
    expect(shown).to_contain_text(re.compile(r"'tiny-chat'(: automatic precision| computes in float32 \(automatic)"))
    page.get_by_label("Prompt", exact=True).fill("The cat")
    page.get_by_role("button", name="Generate", exact=True).click()
    # A tiny model stays in float32 under the automatic choice, and the line says why.
    expect(shown).to_contain_text("'tiny-chat' computes in float32 (automatic", timeout=30_000)
    precision = page.get_by_role("combobox", name="Precision").filter(visible=True)
    precision.click()
    page.get_by_role("option", name="bf16").click()
    expect(shown).to_contain_text("'tiny-chat': bf16 once loaded")
    page.get_by_role("button", name="Generate", exact=True).click()
    # Every CPU computes bf16; the line says what the server's registry says of its CPU (emulated
    # without AMX or AVX512-BF16: that wording is test_core_precision.py's, on both kinds of CPU).
    why = forced_precision("bf16", detected_hardware())[1].removeprefix("bf16, ")
    expect(shown).to_contain_text(f"'tiny-chat' computes in bf16 ({why}).", timeout=30_000)
    expect(page.locator("#generation-output textarea")).not_to_have_value("")


def test_sentiment_puts_a_second_model_s_classes_beside_the_first(page, models_dir, tmp_path):
    from tiny_models import build_bert_classifier

    build_bert_classifier(models_dir / "zz-weather", labels=("rainy", "sunny"))
    try:
        page.reload()  # the pickers read the models folder when the page loads
        open_tab(page, "Sentiment")
        second = page.get_by_role("combobox", name="Compare with a second model").filter(visible=True)
        second.fill("zz-weather")
        second.press("Enter")
        page.get_by_label("Text", exact=True).fill("The garden was lovely.")
        page.get_by_role("button", name="Classify", exact=True).click()
        expect(page.locator("#sentiment-scores")).to_contain_text("positive", timeout=60_000)
        compare = page.locator("#sentiment-compare-scores")
        expect(compare).to_contain_text("sunny", timeout=60_000)
        expect(compare).to_contain_text("zz-weather: classes and confidence")
        page.screenshot(path=str(tmp_path / "sentiment-side-by-side.png"), full_page=True)
    finally:
        shutil.rmtree(models_dir / "zz-weather")


def test_generation_puts_a_second_model_s_text_beside_the_first(page):
    open_generation_with_tiny_model(page)
    second = page.get_by_role("combobox", name="Compare with a second model").filter(visible=True)
    second.fill("tiny-gpt2")
    second.press("Enter")
    page.get_by_label("Prompt", exact=True).fill("The student reads")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#generation-compare-output textarea').value.length > 20", timeout=60_000)
    first = page.locator("#generation-output textarea").input_value()
    other = page.locator("#generation-compare-output textarea").input_value()
    # Chat mode is on: the chat model answers the message; the plain GPT-2 continues the prompt,
    # and the note says why.
    assert first and other.startswith("The student reads") and first != other
    expect(page.locator("#generation-note")).to_contain_text("'tiny-gpt2' has no chat template")
