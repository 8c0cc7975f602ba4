"""The run history in headless Chromium: the table of ended runs, two runs' curves overlaid,
and renaming or deleting a saved model after a confirmation."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from conftest import separable_csv
from test_app_finetune import finetune_args, wait_for_state
from test_browser_workflows import open_page


def test_the_history_lists_runs_overlays_two_and_renames_and_deletes_after_confirming(browser, ft_client,
                                                                                      finetune_server, tmp_path):
    models = finetune_server.models_dir
    for name, epochs in (("overlay-a", 2), ("overlay-b", 4)):
        ft_client.predict(**finetune_args(separable_csv(tmp_path / f"{name}.csv"), name, epochs=epochs),
                          api_name="/finetune")
        wait_for_state(ft_client, "finished", "failed", timeout=300)
    page = open_page(browser, finetune_server, "Fine-tune")
    page.get_by_role("button", name="Run history and saved models").click()
    table = page.locator("#runs-table")
    expect(table).to_contain_text("overlay-a")
    expect(table).to_contain_text(re.compile(r"overlay-b.*finished.*tiny-bert-sentiment.*classification"))
    expect(table).to_contain_text("4 epochs")

    compare = page.get_by_role("combobox", name="Overlay the curves of two runs")
    compare.click()  # the list stays open while options are picked
    for name in ("overlay-a", "overlay-b"):
        page.get_by_role("option", name=re.compile(f"{name} · finished")).first.click()
    page.keyboard.press("Escape")
    expect(page.locator("#runs-curves-caption")).to_contain_text(
        re.compile(r"run 1: .*overlay-a · finished · run 2: .*overlay-b · finished"))
    curves = page.locator("#runs-curves")
    for series in ("run 1 · train", "run 1 · validation", "run 2 · train", "run 2 · validation"):
        expect(curves).to_contain_text(series)
    page.screenshot(path=str(tmp_path / "runs-overlay.png"), full_page=True)

    saved = page.get_by_role("combobox", name="Saved model")
    saved.fill("overlay-a")
    saved.press("Enter")
    page.get_by_label("New name").fill("tiny-gpt2")  # taken: refused at once, nothing asked
    page.get_by_role("button", name="Rename…").click()
    expect(page.locator(".toast-body").filter(has_text="already exists")).to_be_visible()
    yes = page.get_by_role("button", name="Yes, do it")
    expect(yes).to_be_hidden()
    page.get_by_label("New name").fill("overlay-renamed")
    page.get_by_role("button", name="Rename…").click()
    confirm = page.locator("#runs-question")
    expect(confirm).to_contain_text("Rename overlay-a to overlay-renamed?")
    page.get_by_role("button", name="No, keep it as it is").click()
    expect(page.locator("#runs-outcome")).to_contain_text("Nothing was changed.")
    assert (models / "overlay-a").is_dir()
    page.get_by_role("button", name="Rename…").click()
    yes.click()
    expect(page.locator("#runs-outcome")).to_contain_text("Renamed 'overlay-a' to 'overlay-renamed'.")
    expect(yes).to_be_hidden()
    expect(table).to_contain_text("as 'overlay-renamed'")
    assert (models / "overlay-renamed").is_dir() and not (models / "overlay-a").exists()

    saved.fill("overlay-b")
    saved.press("Enter")
    page.get_by_role("button", name="Delete…").click()
    expect(confirm).to_contain_text(re.compile(r"Delete overlay-b \([\d.]+ MiB\) for good\? This cannot be undone."))
    page.screenshot(path=str(tmp_path / "runs-confirm.png"), full_page=True)
    yes.click()
    expect(page.locator("#runs-outcome")).to_contain_text("Deleted 'overlay-b'.")
    expect(table).to_contain_text("model 'overlay-b' deleted")
    assert not (models / "overlay-b").exists()

    # Every panel's picker follows: the new name is offered in Sentiment, the deleted model is not.
    page.get_by_role("tab", name="Sentiment").click()
    picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
    picker.click()
    expect(page.get_by_role("option", name="overlay-renamed (local)")).to_be_visible()
    expect(page.get_by_role("option", name="overlay-b (local)")).to_have_count(0)
    page.close()
