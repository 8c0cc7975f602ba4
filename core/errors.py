"""The one exception type that carries a message written for a person."""


class WorkbenchError(Exception):
    """A problem the user can understand and act on (bad input, model unavailable, ...).

    Panels show ``str(error)`` as-is in a ``gr.Error``; nothing else changes.
    """


def first_line(error: BaseException) -> str:
    """The first line of a library error's message (its type name if it has none): enough for a
    person to see what went wrong without a traceback."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_number(value, low: float, high: float, what: str, integer: bool = False,
                   low_open: bool = False) -> float:
    """`value` as a number within [low, high] (or (low, high] with low_open), else a
    WorkbenchError naming `what` and the allowed range."""
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{what} must be a number (got {value!r}).") from None
    if math.isnan(number):
        raise WorkbenchError(f"{what} must be a number (got {value!r}).")
    if integer and number != int(number):
        raise WorkbenchError(f"{what} must be a whole number (got {value}).")
    if (number <= low if low_open else number < low) or number > high:
        bound = f"above {_plain(low)}" if low_open else f"at least {_plain(low)}"
        raise WorkbenchError(f"{what} must be {bound} and at most {_plain(high)} (got {_plain(number)}).")
    return number


def _plain(number: float) -> str:
    """A number as people write it: 2 not 2.0, 0.5, 4294967295 not 4.29e+09."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"
