"""Where words begin and end in a person's text, for answers picked from it: an answer never
starts or ends inside a word, a number ("112.2", "1,500,000") or a contraction ("isn't").

A word is delimited by whitespace; punctuation at its edges ("(the bridge)", "1889.") is not
part of the answer, punctuation inside it ("112.2", "state-of-the-art") is.
"""

from __future__ import annotations

_OPENING = "([{\"'“‘«"
_CLOSING = ")]}\"'”’».,;:!?"


def starts_word(text: str, position: int) -> bool:
    """Whether a word starts at `position`: after the text's start or whitespace, or after an
    opening bracket or quote that itself follows one of those."""
    if position <= 0:
        return True
    before = text[position - 1]
    if before.isspace():
        return True
    return before in _OPENING and (position == 1 or text[position - 2].isspace())


def ends_word(text: str, position: int) -> bool:
    """Whether a word ends at `position`: before the text's end or whitespace, or before closing
    punctuation that runs to one of those ("1889." ends at the 9; "112.2" does not end at "112")."""
    rest = text[position:]
    stripped = rest.lstrip(_CLOSING)
    return not stripped or stripped[0].isspace()


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) widened so that neither cuts a word of `text`; edge punctuation stays out."""
    while start > 0 and not starts_word(text, start):
        start -= 1
    while end < len(text) and not ends_word(text, end):
        end += 1
    return start, end
