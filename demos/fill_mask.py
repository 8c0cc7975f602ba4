"""Fill-mask panel: a sentence with [MASK] or <mask> -> top-k words per mask."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from core import inference
from core.limits import MAX_FILL_MASK_TOP_K
from core.models import FILL_MASK
from demos.common import AppContext, as_text, busy_click, model_picker, precision_picker, setting_slider, show_errors


def build(ctx: AppContext) -> None:
    model = model_picker(ctx, FILL_MASK)
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text with [MASK] or <mask>", lines=2,
                              value="The capital of France is [MASK].")
            top_k = setting_slider(1, MAX_FILL_MASK_TOP_K, "Predictions per mask", value=5, step=1)
            precision, _, show_precision = precision_picker(ctx, FILL_MASK, model)
            fill_button = gr.Button("Fill", variant="primary")
        with gr.Column():
            note = gr.Markdown(elem_id="fill-mask-note", label="Note")
            bars = gr.BarPlot(x="prediction", y="score", color="mask", label="Predictions",
                              sort="-y", elem_id="fill-mask-bars")
    table = gr.Dataframe(label="Filled sentences", elem_id="fill-mask-table", interactive=False,
                         headers=["mask", "rank", "token", "score", "sentence"])

    @show_errors
    def fill(text, model, top_k=5, precision=None):
        """The top-k predictions for each [MASK] (or <mask>) in the text, and a note ("" or a
        warning: a model whose head started untrained). `precision`: auto, fp32 or bf16 (left
        out: the app's, --precision)."""
        per_mask = inference.fill_mask(ctx.registry, model, text, top_k, precision)
        warning = inference.untrained_head_note(ctx.registry, model)
        rows = [
            {"mask": f"mask {p.mask_index}", "rank": rank, "token": p.token,
             "score": round(p.score, 4), "sentence": p.sequence}
            for predictions in per_mask for rank, p in enumerate(predictions, start=1)
        ]
        frame = pd.DataFrame(rows)
        bars_frame = frame.assign(prediction=frame["mask"] + ": " + frame["token"])
        return bars_frame[["prediction", "score", "mask"]], frame, f"⚠️ {as_text(warning)}" if warning else ""

    # No progress overlay on the results: a refusal leaves no "Error" mark on them.
    wiring = dict(inputs_kwargs=dict(text=text, model=model, top_k=top_k, precision=precision),
                  outputs=[bars, table, note])
    # Fill-masks asked together run as one batch on the model thread (core/threads.py).
    busy_click(fill_button, "Filling…", fill, api_name="fill_mask", concurrency_limit=None,
               **wiring).then(**show_precision)
    text.submit(fill, api_visibility="private", show_progress="hidden", **wiring).then(**show_precision)
