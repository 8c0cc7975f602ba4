"""Pieces every panel shares: the context, error display and the model picker."""

from __future__ import annotations

import functools
import html
import inspect
import time
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
    # The "nothing is ready offline" note under each picker, by task.
    offline_notes: dict[str, list[gr.Markdown]] = field(default_factory=dict)


def as_text(message: str) -> str:
    """A message that may quote user input (file names, labels, cells), made safe for components
    that render HTML or Markdown (toasts, gr.Markdown): shown as the characters, never as markup."""
    return html.escape(str(message), quote=False).replace("*", "&#42;").replace("`", "&#96;")


def _toast(error: WorkbenchError) -> gr.Error:
    # Toasts render HTML: escape it, but keep the message readable for API clients (no entities
    # for quotes, and Markdown is not rendered in toasts).
    return gr.Error(html.escape(str(error), quote=False))


def show_errors(handler):
    """Turn WorkbenchError from core into a gr.Error toast; works for plain and generator handlers."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except WorkbenchError as error:
                raise _toast(error) from error
        return generator_wrapper

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except WorkbenchError as error:
            raise _toast(error) from error
    return wrapper


JOB_POLL_SECONDS = 0.5  # how often a page watching the training job reads its status


def follow_job(runner, progress: gr.Progress, job=None):
    """Snapshots of the training job (from `job`, else its current status) until it ends,
    moving the page's progress bar: the loop of every handler that streams a job."""
    job = job or runner.status()
    yield job
    while job.active:
        time.sleep(JOB_POLL_SECONDS)
        job = runner.status()
        if job.progress is not None and job.progress.total_steps:
            progress((job.progress.step, job.progress.total_steps), desc=job.message, unit="steps")
        yield job


def _picker_state(registry: ModelRegistry, task: str, current: str | None = None):
    """(choices, value, offline note) from one reading of the task's choices: the models folder
    re-read; the person's pick (even a typed Hub id) kept, else the first model ready offline."""
    choices = registry.choices(task)
    return ([(choice.label, choice.name) for choice in choices],
            current or registry.default_choice(task, choices), registry.offline_note(task, choices))


def _note_markdown(note: str | None, **layout) -> gr.Markdown:
    return gr.Markdown(f"⚠️ {note}" if note else "", visible=bool(note), **layout)


def model_picker(ctx: AppContext, task: str, api_name: str) -> gr.Dropdown:
    """A model dropdown (packaged and local models first, then Hub ids, each marked ready offline
    or not; any Hub id may be typed), a refresh button that re-reads the models directory (new
    models appear without a restart), and a note saying what to do when nothing is ready."""
    choices, value, offline_note = _picker_state(ctx.registry, task)
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(
            choices=choices, value=value, label="Model", allow_custom_value=True, scale=5,
            info="Ready-to-use models first, then Hugging Face Hub ids (type any other id).",
        )
        refresh = gr.Button("↻ Refresh models", scale=0, min_width=130, size="sm")
    note = _note_markdown(offline_note, elem_id=f"offline-note-{task}")

    def refresh_choices(current: str | None):
        return refreshed_picker(ctx.registry, task, current)

    refresh.click(refresh_choices, inputs=dropdown, outputs=[dropdown, note], api_name=api_name)
    ctx.demo.load(refresh_choices, inputs=dropdown, outputs=[dropdown, note], api_visibility="private")
    ctx.pickers.setdefault(task, []).append(dropdown)
    ctx.offline_notes.setdefault(task, []).append(note)
    return dropdown


def refreshed_picker(registry: ModelRegistry, task: str, current: str | None) -> tuple[gr.Dropdown, gr.Markdown]:
    """A picker's fresh choices (keeping `current`, if given) and its offline note."""
    choices, value, note = _picker_state(registry, task, current)
    return gr.Dropdown(choices=choices, value=value), _note_markdown(note)


def refreshed_pickers(ctx: AppContext) -> tuple[list[gr.Dropdown], callable]:
    """All pickers, and a handler that re-reads the models directory into them (keeping picks)."""
    order = [(task, dropdown) for task, dropdowns in ctx.pickers.items() for dropdown in dropdowns]

    def refresh(*current):
        return [refreshed_picker(ctx.registry, task, value)[0] for (task, _), value in zip(order, current)]

    return [dropdown for _, dropdown in order], refresh
