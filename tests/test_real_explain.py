"""Inside the model and question answering on the packaged SmolLM2 (real weights, offline)."""

from __future__ import annotations

import pytest

from conftest import SMOLLM2
from core import answer as qa
from core import explain
from core.models import TEXT_GENERATION, ModelRegistry
from demos.answer import EXAMPLE_CONTEXT


@pytest.fixture(scope="module")
def registry(smollm2_folder, tmp_path_factory):
    return ModelRegistry(tmp_path_factory.mktemp("no-local-models"))


def test_smollm2_s_attention_is_causal_in_every_head_of_a_deep_layer(registry):
    view = explain.attention(registry, TEXT_GENERATION, SMOLLM2, "The cat sat on the mat.", layer=30, head=9)
    assert (view.layers, view.heads) == (30, 9) and view.causal
    assert view.tokens[:3] == ["The", "␣cat", "␣sat"]
    for i, row in enumerate(view.weights):
        assert sum(row) == pytest.approx(1.0, abs=1e-3) and not any(row[i + 1:])


def test_smollm2_is_sure_of_a_well_known_continuation(registry):
    choices = explain.token_probabilities(registry, SMOLLM2, "The capital of France is", continuation=" Paris")
    assert choices[0].token == "␣Paris" and choices[0].probability > 0.3
    assert choices[0].alternatives[0][0] == "␣Paris"


def test_smollm2_answers_a_question_from_the_context_and_the_answer_is_found_there(registry):
    # The panel's example: a span of the context, in whole words, each candidate once.
    result = qa.answer(registry, SMOLLM2, EXAMPLE_CONTEXT, "Who designed the Eiffel Tower?", precision="fp32")
    assert result.way == qa.GENERATIVE and result.answer == "Gustave Eiffel"
    spans = [EXAMPLE_CONTEXT[span.start:span.end] for span in result.spans]
    assert spans[0] == "Gustave Eiffel" and len(set(spans)) == len(spans)
    # A weaker case (bench/qa_chat.py measures how often it is right): the right span is a candidate.
    tall = qa.answer(registry, SMOLLM2, EXAMPLE_CONTEXT, "How tall is the Eiffel Tower?", precision="fp32")
    assert any("330 metres" in span.text for span in tall.spans)
