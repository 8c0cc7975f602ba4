"""Word edges for answers picked from a text: never inside a word, a number or a contraction."""

from __future__ import annotations

import pytest

from core.words import ends_word, starts_word, whole_words

TEXT = "It is 112.2 metres tall (built in 1889), cost 1,500,000 francs and isn't state-of-the-art."


@pytest.mark.parametrize("cut, whole", [
    ("112", "112.2"), ("2 metres", "112.2 metres"), ("500,000", "1,500,000"), ("isn", "isn't"),
    ("of-the", "state-of-the-art"), ("uilt in 188", "built in 1889"), ("1889", "1889"), ("tall", "tall"),
])
def test_a_span_that_cuts_a_word_is_widened_to_it_and_edge_punctuation_stays_out(cut, whole):
    start = TEXT.index(cut)
    widened = whole_words(TEXT, start, start + len(cut))
    assert TEXT[widened[0]:widened[1]] == whole


def test_words_start_after_space_or_an_opening_bracket_and_end_before_space_or_closing_punctuation():
    assert starts_word(TEXT, 0) and starts_word(TEXT, TEXT.index("built"))  # after "("
    assert not starts_word(TEXT, TEXT.index("500")) and not starts_word(TEXT, TEXT.index("2 metres"))
    assert ends_word(TEXT, TEXT.index("1889") + 4) and ends_word(TEXT, len(TEXT) - 1) and ends_word(TEXT, len(TEXT))
    assert not ends_word(TEXT, TEXT.index("112") + 3) and not ends_word(TEXT, TEXT.index("isn") + 3)
