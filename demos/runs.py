"""Run history and saved models, in the Fine-tune tab: every run that ended as a table, two runs'
loss and validation curves overlaid, and renaming or deleting a saved model after a
confirmation. The history itself is core.history; the folder changes are core.model_folders."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from core import model_folders
from core.errors import WorkbenchError
from core.data import MIB
from core.history import as_seen_by
from core.jobs import CANCELLED, DISCARDED, FAILED, FINISHED, SAVE_FAILED
from demos.common import AppContext, JobView, as_text, open_dropdown, show_errors

# One hue per run, lighter for its training loss. The series keep these names whichever runs are
# shown: Gradio's plot keeps the series it was first drawn with.
_SERIES_COLORS = {"run 1 · train": "#93c5fd", "run 1 · validation": "#1d4ed8", "run 2 · train": "#fdba74",
                  "run 2 · validation": "#c2410c"}
# What tells runs apart first: a narrow page scrolls the rest into view.
COLUMNS = ["model", "outcome", "before → after", "kept", "settings", "data", "base", "task", "finished", "time"]
MAX_COMPARED = 2


def build(ctx: AppContext) -> None:
    runner = ctx.runner
    history = ctx.history
    with gr.Accordion("Run history and saved models", open=False, elem_id="runs"):
        # Filled for each page by the job timer's first tick, as its person may see it.
        table = gr.Dataframe(_history_frame([]), headers=COLUMNS, label="Runs (newest first)",
                             interactive=False, wrap=True, elem_id="runs-table")
        compared = gr.Dropdown([], value=[], multiselect=True, max_choices=MAX_COMPARED,
                               label="Overlay the curves of two runs", elem_id="runs-compare")
        curves_caption = gr.Markdown(elem_id="runs-curves-caption")
        curves = gr.LinePlot(x="step", y="loss", color="series", label="Loss: run 1 and run 2 overlaid",
                             elem_id="runs-curves", visible=False, color_map=_SERIES_COLORS)
        gr.Markdown("**Saved models** in the models folder: rename or delete one.")
        with gr.Row():
            model = open_dropdown("a folder name in the models folder", label="Saved model",
                                  choices=model_folders.saved_models(ctx.registry), value=None, scale=2,
                                  elem_id="runs-model")
            new_name = gr.Textbox(label="New name", scale=2, elem_id="runs-new-name")
            rename_button = gr.Button("Rename…", scale=1)
            delete_button = gr.Button("Delete…", variant="stop", scale=1)
        pending = gr.State(None)  # the action waiting for its confirmation
        with gr.Group(visible=False) as confirm_row:
            question = gr.Markdown(elem_id="runs-question")
            with gr.Row():
                confirm_button = gr.Button("Yes, do it", variant="stop")
                keep_button = gr.Button("No, keep it as it is")
        outcome = gr.Markdown(elem_id="runs-outcome")

    def render(job, person):
        runs = as_seen_by(history.runs(), person)
        return [_history_frame(runs), gr.update(choices=_run_choices(runs)),
                gr.update(choices=model_folders.saved_models(ctx.registry))]

    ctx.job_views.append(JobView([table, compared, model], render))

    def overlay(run_ids):
        runs = [run for run in (history.get(run_id) for run_id in run_ids or []) if run]
        if len(runs) < MAX_COMPARED:
            return gr.update(visible=False), "Pick two runs to overlay their curves." if runs else ""
        return (gr.update(value=_curves_frame(runs), visible=True),
                " · ".join(f"**run {index}**: {as_text(run_label(run))}" for index, run in enumerate(runs, 1)))

    compared.change(overlay, compared, [curves, curves_caption], api_visibility="private", show_progress="hidden")

    hidden = gr.update(visible=False)

    @show_errors
    def ask_rename(name, new, request: gr.Request):
        folder = model_folders.check_rename(ctx.registry, runner, name, new, ctx.person(request))
        return ({"action": "rename", "name": folder.name, "new": (new or "").strip()},
                f"Rename **{as_text(folder.name)}** to **{as_text(new.strip())}**? Pick it under its new name "
                f"afterwards; the run history follows.", gr.update(visible=True), "")

    @show_errors
    def ask_delete(name, request: gr.Request):
        folder = model_folders.check_delete(ctx.registry, runner, name, ctx.person(request))
        size = model_folders.folder_size(folder) / MIB
        return ({"action": "delete", "name": folder.name},
                f"Delete **{as_text(folder.name)}** ({size:,.1f} MiB) for good? This cannot be undone.",
                gr.update(visible=True), "")

    rename_button.click(ask_rename, [model, new_name], [pending, question, confirm_row, outcome],
                        api_visibility="private", show_progress="hidden")
    delete_button.click(ask_delete, model, [pending, question, confirm_row, outcome], api_visibility="private",
                        show_progress="hidden")
    keep_button.click(lambda: (None, hidden, "Nothing was changed."), None, [pending, confirm_row, outcome],
                      api_visibility="private", show_progress="hidden")

    @show_errors
    def confirmed(action, request: gr.Request):
        if not action:
            raise WorkbenchError("Nothing waits for a confirmation.")
        if action["action"] == "rename":
            message = rename_model(action["name"], action["new"], request)
            chosen = action["new"]
        else:
            message, chosen = delete_model(action["name"], request), None
        runs = as_seen_by(history.runs(), ctx.person(request))
        return (None, hidden, message, _history_frame(runs), gr.update(choices=_run_choices(runs)),
                gr.update(choices=model_folders.saved_models(ctx.registry), value=chosen), "")

    done = confirm_button.click(confirmed, pending, [pending, confirm_row, outcome, table, compared, model, new_name],
                                api_visibility="private", show_progress="hidden")
    # Every panel's picker re-reads the models folder: the old name goes, the new one appears.
    ctx.models_changed.append(done)

    # ----- the same for API clients (no confirmation step: the call is the decision) --------------
    def runs(request: gr.Request) -> list[dict]:
        """Every fine-tuning run that ended, newest first: task, base, data, settings, metrics
        before and after, the kept epoch, time, loss curve and the saved model (if any). On a
        shared server, other people's runs come without the name of their data file."""
        return as_seen_by(history.runs(), ctx.person(request))

    @show_errors
    def rename_model(name: str, new_name: str, request: gr.Request) -> str:
        """Rename a model folder in the models folder (refused while a run uses it, and on a shared
        server unless you saved it)."""
        target = model_folders.rename_model(ctx.registry, runner, name, new_name, ctx.person(request))
        return f"Renamed '{as_text(name)}' to '{as_text(target.name)}'."

    @show_errors
    def delete_model(name: str, request: gr.Request) -> str:
        """Delete a model folder from the models folder, for good (refused while a run uses it, and
        on a shared server unless you saved it)."""
        model_folders.delete_model(ctx.registry, runner, name, ctx.person(request))
        return f"Deleted '{as_text(name)}'."

    gr.api(runs, api_name="runs")
    gr.api(rename_model, api_name="rename_model")
    gr.api(delete_model, api_name="delete_model")


_OUTCOMES = {FINISHED: "finished", CANCELLED: "cancelled (waiting: save or discard)", FAILED: "failed",
             SAVE_FAILED: "save failed (waiting)", DISCARDED: "discarded"}


def outcome(run: dict) -> str:
    """How a run ended and where its model is, in a few words."""
    state = run.get("state")
    words = _OUTCOMES.get(state, state or "?")
    if run.get("stopped") and state in (FINISHED, DISCARDED):
        words = f"cancelled, {'saved' if state == FINISHED else 'discarded'}"
    if run.get("early_stopped"):
        words += " (early stopping)"
    if run.get("deleted"):
        words += f"; model '{run['deleted']}' deleted"
    elif run.get("saved_as") and run["saved_as"] != run.get("model_name"):
        words += f" as '{run['saved_as']}'"
    return words


def when(run: dict) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run.get("finished_at") or 0))


def _settings(run: dict) -> str:
    settings = run.get("settings") or {}
    parts = [f"{settings['epochs']:g} epochs" if settings.get("epochs") else "",
             f"lr {settings['learning_rate']:g}" if settings.get("learning_rate") else "",
             f"batch {settings['batch_size']}" if settings.get("batch_size") else "",  # None: sized, and it never ran
             f"max length {settings.get('max_length')}",
             "LoRA" + (" (adapter only)" if settings.get("lora_save") == "adapter" else "")
             if settings.get("lora") else ""]
    return " · ".join(part for part in parts if part)


def _change(run: dict) -> str:
    before, after = run.get("metrics_before") or {}, run.get("metrics_after") or {}
    parts = []
    for key, short in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("perplexity", "perplexity"),
                       ("loss", "loss")):
        if key in after:
            parts.append(f"{short} {_number(before.get(key))} → {_number(after[key])}")
        if len(parts) == 2:
            break
    return " · ".join(parts)


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"


def _kept(run: dict) -> str:
    kept = run.get("kept")
    if not kept:
        return ""
    return f"epoch {kept['epoch']:g} of {kept['evaluations']} evaluations" + ("" if kept.get("last") else " (best)")


def _history_frame(runs: list[dict]) -> pd.DataFrame:
    rows = [[run.get("model_name"), outcome(run), _change(run), _kept(run), _settings(run), run.get("data"),
             run.get("base_model"), run.get("task"), when(run), f"{run.get('seconds', 0):.0f} s"] for run in runs]
    return pd.DataFrame(rows, columns=COLUMNS)


def run_label(run: dict) -> str:
    return f"{when(run)} · {run.get('model_name')} · {outcome(run)}"


def _run_choices(runs: list[dict]) -> list[tuple[str, str]]:
    return [(run_label(run), run["id"]) for run in runs if run.get("loss_curve")]


def _curves_frame(runs: list[dict]) -> pd.DataFrame:
    """The runs' train and validation points, as series "run 1 · train", "run 1 · validation", …"""
    rows = [{"step": point["step"], "loss": point["loss"], "series": f"run {index} · {point['series']}"}
            for index, run in enumerate(runs, 1) for point in run["loss_curve"]]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])
