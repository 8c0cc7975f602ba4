"""The Inside the model and Question answering panels through gradio_client."""

from __future__ import annotations

import pytest

TEXT = "the cat likes the red house."


def test_attention_returns_the_heatmap_and_its_values(client):
    caption, heatmap, values = client.predict(text=TEXT, model="tiny-gpt2", task="text-generation", layer=2, head=0,
                                              api_name="/attention")
    tokens = values["tokens"]
    assert values["causal"] and values["layer"] == 2 and values["layers"] == 2
    assert len(values["weights"]) == len(tokens) and all(len(row) == len(tokens) for row in values["weights"])
    assert heatmap.count('class="attn-masked"') == len(tokens) * (len(tokens) - 1) // 2  # the cells above the diagonal
    assert "layer 2 of 2, the mean over its heads" in caption and "masked" in caption


def test_attention_of_an_encoder_has_no_masked_cells(client):
    _, heatmap, values = client.predict(text=TEXT, model="tiny-bert-sentiment", task="text-classification", layer=1,
                                        head=2, api_name="/attention")
    assert not values["causal"] and values["head"] == 2 and 'class="attn-masked"' not in heatmap
    assert heatmap.count("<td") == len(values["tokens"]) ** 2


def test_token_probabilities_list_each_written_token_with_its_alternatives(client):
    coloured, table = client.predict(prompt="the cat likes", model="tiny-gpt2", continuation="", max_new_tokens=6,
                                     top_k=3, api_name="/token_probabilities")
    rows = table["data"]
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert all(0 < row[2] <= 1 and len(row[3].split(", ")) == 3 for row in rows)
    assert coloured.count('class="token-prob"') == 6


def test_attributions_explain_the_predicted_or_a_chosen_class(client):
    predicted, coloured = client.predict(text=TEXT, model="tiny-bert-sentiment", label="", api_name="/attributions")
    chosen, _ = client.predict(text=TEXT, model="tiny-bert-sentiment", label="positive", api_name="/attributions")
    assert "says **" in predicted and "says **positive**" in chosen
    assert coloured.count('class="attribution"') == len(TEXT.split()) + 1  # the words and the final "."


def test_answer_highlights_the_span_in_the_context(client):
    context = "the cat likes the red house. a dog reads a long book every day."
    outcome, highlighted, spans = client.predict(context=context, question="what does the dog read?",
                                                 model="tiny-bert-qa", top_k=3, api_name="/answer")
    marked = [piece["token"] for piece in highlighted if piece["class_or_confidence"] == "answer"]
    assert len(marked) == 1 and marked[0] == spans["data"][0][1]
    assert "".join(piece["token"] for piece in highlighted) == context
    assert len(spans["data"]) == 3 and "extractive model" in outcome


def test_answer_with_a_chat_model_says_which_way_answered(client):
    outcome, highlighted, _ = client.predict(context="the cat likes the red house.", question="what does the cat like?",
                                             model="tiny-chat", top_k=3, api_name="/answer")
    assert "chat model **tiny-chat**" in outcome or "answers the chat model **tiny-chat**" in outcome


@pytest.mark.parametrize("api_name, kwargs, message", [
    ("/attention", dict(text=TEXT, model="tiny-gpt2", task="text-generation", layer=9, head=0), "Layer must be from 1 to 2"),
    ("/attention", dict(text=TEXT, model="tiny-gpt2", task="fill-mask", layer=1, head=0), "it is a text generation model"),
    ("/token_probabilities", dict(prompt="", model="tiny-gpt2"), "The prompt is empty"),
    ("/attributions", dict(text=TEXT, model="tiny-bert-sentiment", label="joy"), "no class 'joy'"),
    ("/answer", dict(context="", question="why?", model="tiny-bert-qa"), "The context is empty"),
    ("/answer", dict(context=TEXT, question="why?", model="deepset/roberta-base-squad2"), "cannot be reached"),
])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(client, api_name, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(**kwargs, api_name=api_name)
    assert client.predict(text=TEXT, model="tiny-bert-sentiment", api_name="/classify")
