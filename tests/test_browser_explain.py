"""The Inside the model and Question answering panels in a real headless Chromium."""

from __future__ import annotations

from playwright.sync_api import expect


def pick(section, model: str) -> None:
    picker = section.get_by_role("combobox", name="Model", exact=True)
    picker.fill(model)
    picker.press("Enter")


def test_the_attention_heatmap_shows_a_decoder_s_mask_and_an_encoder_s_full_table(page):
    page.get_by_role("tab", name="Inside the model").click()
    section = page.locator("#inside-attention")
    pick(section, "tiny-gpt2")
    section.get_by_label("Text", exact=True).fill("the cat likes the red house")
    section.get_by_role("button", name="Show attention").click()
    heatmap = page.locator("#attention-heatmap")
    expect(heatmap.locator("table")).to_be_visible(timeout=60_000)
    tokens = heatmap.locator("th[scope=row]").count()
    assert tokens >= 6
    assert heatmap.locator("td.attn-masked").count() == tokens * (tokens - 1) // 2
    expect(page.locator("#attention-caption")).to_contain_text("layer 1 of 2, the mean over its heads")
    # the first token can only attend to itself: its cell is the darkest possible
    assert "1.000" in heatmap.locator("tr").nth(1).locator("td").first.get_attribute("title")

    section.get_by_label("Fill-mask (an encoder)").check()
    expect(section.get_by_role("combobox", name="Model", exact=True)).not_to_have_value("tiny-gpt2")
    pick(section, "tiny-bert-mlm")
    section.get_by_label("Head", exact=True).fill("2")
    section.get_by_role("button", name="Show attention").click()
    expect(page.locator("#attention-caption")).to_contain_text("head 2 (of 2)", timeout=60_000)
    assert heatmap.locator("td.attn-masked").count() == 0
    assert heatmap.locator("td").count() == heatmap.locator("th[scope=row]").count() ** 2


def test_a_layer_the_model_lacks_gets_a_message_and_the_heatmap_stays(page):
    page.get_by_role("tab", name="Inside the model").click()
    section = page.locator("#inside-attention")
    pick(section, "tiny-gpt2")
    section.get_by_role("button", name="Show attention").click()
    expect(page.locator("#attention-heatmap table")).to_be_visible(timeout=60_000)
    section.get_by_label("Layer", exact=True).fill("7")
    section.get_by_role("button", name="Show attention").click()
    expect(page.get_by_text("Layer must be from 1 to 2")).to_be_visible()
    expect(page.locator("#attention-heatmap table")).to_be_visible()


def test_generated_tokens_are_coloured_by_probability_with_alternatives_on_hover(page):
    page.get_by_role("tab", name="Inside the model").click()
    section = page.locator("#inside-probabilities")
    pick(section, "tiny-gpt2")
    section.get_by_label("Prompt", exact=True).fill("the cat likes")
    tokens = section.get_by_label("number input for Tokens to write")
    tokens.fill("7")
    tokens.press("Enter")
    section.get_by_role("button", name="Show token probabilities").click()
    coloured = page.locator("#token-probabilities .token-prob")
    expect(coloured).to_have_count(7, timeout=60_000)
    assert "top alternatives" in coloured.first.get_attribute("title")
    expect(page.locator("#token-probability-table")).to_contain_text("probability")


def test_why_this_label_colours_the_words_for_the_chosen_class(page):
    page.get_by_role("tab", name="Inside the model").click()
    section = page.locator("#inside-attributions")
    pick(section, "tiny-bert-sentiment")
    section.get_by_label("Text", exact=True).fill("the cat likes the red house")
    chosen = section.get_by_role("combobox", name="Explain the class")
    chosen.click()
    page.get_by_role("option", name="positive", exact=True).click()
    section.get_by_role("button", name="Explain").click()
    expect(page.locator("#attributions .attribution")).to_have_count(6, timeout=60_000)
    expect(page.locator("#attributions-caption")).to_contain_text("says positive")


def test_question_answering_highlights_the_answer_in_the_context(page):
    page.get_by_role("tab", name="Question answering").click()
    expect(page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)).to_have_value(
        "tiny-bert-qa (local)")
    page.get_by_role("button", name="Answer", exact=True).click()
    outcome = page.locator("#qa-outcome")
    expect(outcome).to_contain_text("picked by the extractive model tiny-bert-qa", timeout=60_000)
    answer = outcome.locator("strong").first.inner_text()
    highlighted = page.locator("#qa-context").get_by_text(answer, exact=True)
    expect(highlighted).to_be_visible()
    expect(page.locator("#qa-spans")).to_contain_text(answer)
