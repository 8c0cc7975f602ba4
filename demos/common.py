"""Pieces every panel shares: the context, error display and the model picker."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import gradio as gr

from core.errors import WorkbenchError
from core.models import ModelRegistry


@dataclass
class AppContext:
    registry: ModelRegistry
    demo: gr.Blocks  # the page, for events that run when it loads
    # Every model picker by task, so a newly saved model can be shown in all of them at once.
    pickers: dict[str, list[gr.Dropdown]] = field(default_factory=dict)


def show_errors(handler):
    """Turn WorkbenchError from core into a gr.Error toast; works for plain and generator handlers."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except WorkbenchError as error:
                raise gr.Error(str(error)) from error
        return generator_wrapper

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except WorkbenchError as error:
            raise gr.Error(str(error)) from error
    return wrapper


def picker_choices(registry: ModelRegistry, task: str) -> list[tuple[str, str]]:
    return [(choice.label, choice.name) for choice in registry.choices(task)]


def _refreshed(registry: ModelRegistry, task: str, current: str | None) -> gr.Dropdown:
    """The picker's choices re-read from the models directory; the person's pick (even a typed
    Hub id) is kept, else the first choice."""
    fresh = picker_choices(registry, task)
    return gr.Dropdown(choices=fresh, value=current or fresh[0][1])


def model_picker(ctx: AppContext, task: str, api_name: str) -> gr.Dropdown:
    """A model dropdown (local models first, then Hub ids; any Hub id may be typed) and a refresh
    button that re-reads the models directory, so new models appear without a restart."""
    choices = picker_choices(ctx.registry, task)
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(
            choices=choices, value=choices[0][1], label="Model", allow_custom_value=True, scale=5,
            info="Models in the models folder first, then Hugging Face Hub ids (type any other id).",
        )
        refresh = gr.Button("↻ Refresh models", scale=0, min_width=130, size="sm")

    def refresh_choices(current: str | None):
        return _refreshed(ctx.registry, task, current)

    refresh.click(refresh_choices, inputs=dropdown, outputs=dropdown, api_name=api_name)
    ctx.demo.load(refresh_choices, inputs=dropdown, outputs=dropdown, api_visibility="private")
    ctx.pickers.setdefault(task, []).append(dropdown)
    return dropdown


def refreshed_pickers(ctx: AppContext) -> tuple[list[gr.Dropdown], callable]:
    """All pickers, and a handler that re-reads the models directory into them (keeping picks)."""
    order = [(task, dropdown) for task, dropdowns in ctx.pickers.items() for dropdown in dropdowns]

    def refresh(*current):
        return [_refreshed(ctx.registry, task, value) for (task, _), value in zip(order, current)]

    return [dropdown for _, dropdown in order], refresh
