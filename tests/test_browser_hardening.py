"""What a person sees when input carries markup: text on the page, never HTML that runs."""

from __future__ import annotations

from playwright.sync_api import expect

PAYLOAD = '<img src=x onerror="window.__pwned=1"><b>bold</b> **stars**'


def not_run(page) -> None:
    assert page.evaluate("window.__pwned") is None, "markup from input ran as HTML"


def test_a_generated_text_with_markup_is_shown_as_text(page):
    page.get_by_role("tab", name="Text generation").click()
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.fill("tiny-gpt2")
    picker.press("Enter")
    page.get_by_label("Chat mode").uncheck()
    page.get_by_label("Prompt", exact=True).fill(PAYLOAD)
    page.get_by_role("button", name="Generate", exact=True).click()
    output = page.locator("#generation-output textarea")
    page.wait_for_function("document.querySelector('#generation-output textarea').value.length > 80",
                           timeout=60_000)
    assert output.input_value().startswith(PAYLOAD)
    not_run(page)


def test_a_scored_file_with_markup_cells_shows_them_as_text(page, tmp_path):
    upload = tmp_path / "markup.csv"
    upload.write_text(f'text\n"{PAYLOAD.replace(chr(34), chr(34) * 2)}"\nplain words\n', encoding="utf-8")
    page.get_by_role("tab", name="Sentiment").click()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.fill("tiny-bert-sentiment")
    picker.press("Enter")
    page.get_by_role("button", name="Score file").click()
    table = page.locator("#sentiment-table")
    expect(table).to_contain_text('<img src=x onerror="window.__pwned=1"><b>bold</b>', timeout=60_000)
    not_run(page)


def test_labels_and_column_names_with_markup_are_shown_as_text(page, tmp_path):
    label = '<img src=x onerror="window.__pwned=1">'
    rows = "".join(f'text {i} here,"{label.replace(chr(34), chr(34) * 2)}"\ntext {i} there,plain\n'
                   for i in range(6))
    upload = tmp_path / "labels.csv"
    upload.write_text("text,label\n" + rows, encoding="utf-8")
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_role("combobox", name="Label column")).to_have_value("label")
    page.get_by_role("button", name="Preview data").click()
    expect(page.locator("#finetune-preview")).to_contain_text(f"Labels: {label}: 5", timeout=30_000)
    not_run(page)

    # An error quoting what the person typed: the toast shows it as typed.
    column = page.get_by_role("combobox", name="Text column")
    column.fill("<b>nope</b>")
    column.press("Enter")
    page.get_by_role("button", name="Preview data").click()
    expect(page.get_by_test_id("toast-body").first).to_contain_text("<b>nope</b>", timeout=30_000)
    not_run(page)
    # The refused preview leaves the last one in view, with no error marks over it.
    expect(page.locator("#finetune-preview")).to_contain_text(f"Labels: {label}: 5")
    trackers = "[data-testid=status-tracker]:not(.hide)"  # Gradio's progress overlay or error pill
    assert page.locator(f"#finetune-preview {trackers}, #finetune-preview-table {trackers}").count() == 0
