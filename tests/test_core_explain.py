"""Inside the model on real (tiny) models: attention weights, token probabilities, attributions."""

from __future__ import annotations

import pytest
import torch

from core import explain
from core.errors import WorkbenchError
from core.models import FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION

TEXT = "the cat likes the red house every day."


# ----- attention ------------------------------------------------------------------------------
@pytest.mark.parametrize("task, model", [(FILL_MASK, "tiny-bert-mlm"), (TEXT_GENERATION, "tiny-gpt2")])
def test_each_attention_row_is_a_distribution_over_the_tokens(registry, task, model):
    view = explain.attention(registry, task, model, TEXT, layer=2, head=1)
    assert len(view.weights) == len(view.tokens) > 5
    for row in view.weights:
        assert len(row) == len(view.tokens)
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
        assert min(row) >= 0


def test_a_decoder_attends_only_to_itself_and_earlier_tokens(registry):
    view = explain.attention(registry, TEXT_GENERATION, "tiny-gpt2", TEXT, layer=1, head=2)
    assert view.causal
    for i, row in enumerate(view.weights):
        assert all(weight == 0 for weight in row[i + 1:]), f"row {i} sees later tokens"
        assert sum(row[:i + 1]) == pytest.approx(1.0, abs=1e-4)
    assert view.weights[0][0] == pytest.approx(1.0)  # the first token can only see itself
    encoder = explain.attention(registry, FILL_MASK, "tiny-bert-mlm", TEXT, layer=1, head=1)
    assert not encoder.causal
    assert any(weight > 0 for weight in encoder.weights[0][1:]), "an encoder's first token sees the others"


def test_the_mean_over_heads_is_the_mean_of_each_head(registry):
    heads = [explain.attention(registry, FILL_MASK, "tiny-bert-mlm", TEXT, layer=2, head=h).weights for h in (1, 2)]
    mean = explain.attention(registry, FILL_MASK, "tiny-bert-mlm", TEXT, layer=2, head=explain.MEAN_OVER_HEADS)
    assert torch.allclose(torch.tensor(mean.weights), (torch.tensor(heads[0]) + torch.tensor(heads[1])) / 2, atol=1e-6)
    assert heads[0] != heads[1], "two heads of a layer attend differently"


def test_attention_matches_the_models_own_eager_forward_pass_and_leaves_its_implementation(registry):
    pipe = registry.get(TEXT_GENERATION, "tiny-gpt2")
    before = pipe.model.config._attn_implementation
    view = explain.attention(registry, TEXT_GENERATION, "tiny-gpt2", TEXT, layer=2, head=1)
    assert pipe.model.config._attn_implementation == before, "the panels keep their fast attention"
    ids = pipe.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    pipe.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            direct = pipe.model(ids, output_attentions=True).attentions[1][0, 0]
    finally:
        pipe.model.set_attn_implementation(before)
    assert torch.allclose(torch.tensor(view.weights), direct, atol=1e-5)


def test_tokens_are_shown_as_the_model_sees_them(registry):
    view = explain.attention(registry, TEXT_GENERATION, "tiny-gpt2", "the cat likes", layer=1)
    assert "␣cat" in view.tokens, view.tokens  # a byte-level token carries its leading space
    assert "".join(view.tokens).replace("␣", " ") == "the cat likes"


def test_attention_refuses_a_layer_or_head_the_model_does_not_have(registry):
    with pytest.raises(WorkbenchError, match="Layer must be from 1 to 2"):
        explain.attention(registry, FILL_MASK, "tiny-bert-mlm", TEXT, layer=3)
    with pytest.raises(WorkbenchError, match="Head must be from 1 to 2"):
        explain.attention(registry, FILL_MASK, "tiny-bert-mlm", TEXT, layer=1, head=5)
    with pytest.raises(WorkbenchError, match="empty"):
        explain.attention(registry, FILL_MASK, "tiny-bert-mlm", "  ", layer=1)


def test_a_long_text_is_cut_to_the_attention_limit(registry):
    from core.limits import MAX_ATTENTION_TOKENS

    view = explain.attention(registry, FILL_MASK, "tiny-bert-mlm", " ".join([TEXT] * 30), layer=1)
    assert view.truncated and len(view.tokens) == MAX_ATTENTION_TOKENS


# ----- token probabilities --------------------------------------------------------------------
def test_token_probabilities_match_a_direct_forward_pass(registry):
    choices = explain.token_probabilities(registry, "tiny-gpt2", "the cat likes", max_new_tokens=8, top_k=3)
    assert len(choices) == 8
    pipe = registry.get(TEXT_GENERATION, "tiny-gpt2")
    prompt_ids = pipe.tokenizer("the cat likes")["input_ids"]
    written = pipe.tokenizer("".join(choice.text for choice in choices), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = pipe.model(torch.tensor([prompt_ids + written])).logits[0]
    probabilities = torch.softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    for step, choice in enumerate(choices):
        assert choice.probability == pytest.approx(float(probabilities[step, written[step]]), abs=1e-5)
        # written greedily: the chosen token is the most likely one, listed first
        assert choice.alternatives[0][1] == pytest.approx(choice.probability, abs=1e-6)
        assert [p for _, p in choice.alternatives] == sorted((p for _, p in choice.alternatives), reverse=True)
        assert len(choice.alternatives) == 3


def test_a_given_continuation_is_scored_token_by_token(registry):
    likely = explain.token_probabilities(registry, "tiny-gpt2", "the cat likes", continuation=" the red house")
    odd = explain.token_probabilities(registry, "tiny-gpt2", "the cat likes", continuation=" house red the")
    assert "".join(choice.text for choice in likely) == " the red house"
    mean = lambda choices: sum(choice.probability for choice in choices) / len(choices)  # noqa: E731
    assert mean(likely) > mean(odd), "the corpus' word order is more probable than its reverse"


def test_a_continuation_is_read_with_the_prompt_as_the_model_would_write_it(registry):
    spaced = explain.token_probabilities(registry, "tiny-gpt2", "the cat likes", continuation=" the red house")
    typed = explain.token_probabilities(registry, "tiny-gpt2", "the cat likes", continuation="the red house")
    assert [c.token for c in typed] == [c.token for c in spaced] and typed[0].token == "␣the"
    assert [c.probability for c in typed] == pytest.approx([c.probability for c in spaced])


def test_token_probabilities_refuse_bad_settings(registry):
    with pytest.raises(WorkbenchError, match="Tokens to write"):
        explain.token_probabilities(registry, "tiny-gpt2", "the cat", max_new_tokens=0)
    with pytest.raises(WorkbenchError, match="Alternatives"):
        explain.token_probabilities(registry, "tiny-gpt2", "the cat", top_k=99)
    with pytest.raises(WorkbenchError, match="fill-mask"):
        explain.token_probabilities(registry, "tiny-bert-mlm", "the cat")


# ----- attributions ---------------------------------------------------------------------------
def test_attributions_give_each_token_a_score_and_change_with_the_input(registry):
    first = explain.attributions(registry, "tiny-bert-sentiment", "the cat likes the red house")
    other = explain.attributions(registry, "tiny-bert-sentiment", "a dog reads a long book")
    assert len(first.scores) == len(first.tokens) and first.tokens[1] == "cat"
    assert max(abs(score) for score in first.scores) == pytest.approx(1.0)
    assert first.scores != other.scores[:len(first.scores)]
    assert first.label == first.predicted and first.label in ("negative", "positive")
    assert first.delta < 0.05, "integrated gradients converged: the scores add up to the change in probability"


def test_the_other_class_of_two_gets_the_opposite_attributions(registry):
    # With two classes p(negative) = 1 - p(positive): each token's push is the same, reversed.
    negative = explain.attributions(registry, "tiny-bert-sentiment", TEXT, "negative")
    positive = explain.attributions(registry, "tiny-bert-sentiment", TEXT, "positive")
    assert negative.label == "negative" and positive.label == "positive"
    assert negative.probability + positive.probability == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(torch.tensor(negative.scores), -torch.tensor(positive.scores), atol=1e-3)


def test_attributions_name_the_classes_when_asked_for_another(registry):
    with pytest.raises(WorkbenchError, match="no class 'joy'.*negative, positive"):
        explain.attributions(registry, "tiny-bert-sentiment", TEXT, "joy")
    with pytest.raises(WorkbenchError, match="fill-mask"):
        explain.attributions(registry, "tiny-bert-mlm", TEXT)
    assert registry.get(TEXT_CLASSIFICATION, "tiny-bert-sentiment")  # still serving
