"""The one exception type that carries a message written for a person."""


class WorkbenchError(Exception):
    """A problem the user can understand and act on (bad input, model unavailable, ...).

    Panels show ``str(error)`` as-is in a ``gr.Error``; nothing else changes.
    """
