"""Question answering panel: a context and a question -> the answer highlighted in the context."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from core import answer as qa
from core.limits import MAX_ANSWER_TOP_K
from core.models import QUESTION_ANSWERING
from demos.common import AppContext, busy_click, model_picker, precision_picker, setting_slider, show_errors

EXAMPLE_CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed by the "
                   "engineering company of Gustave Eiffel and built from 1887 to 1889 as the entrance to the "
                   "1889 World's Fair. It is 330 metres tall.")
EXAMPLE_QUESTION = "When was the Eiffel Tower built?"


def highlighted_context(context: str, result: qa.Answer) -> list[tuple[str, str | None]]:
    """The context in pieces for gr.HighlightedText: the answer marked "answer", the other
    listed spans that do not overlap it marked "other candidate"."""
    marks: list[tuple[int, int, str]] = []
    for rank, span in enumerate(result.spans):
        if rank > 0 and not result.answer:
            break
        label = "answer" if rank == 0 and result.answer else "other candidate"
        if all(span.end <= start or span.start >= end for start, end, _ in marks):
            marks.append((span.start, span.end, label))
    pieces, position = [], 0
    for start, end, label in sorted(marks):
        if start > position:
            pieces.append((context[position:start], None))
        pieces.append((context[start:end], label))
        position = end
    if position < len(context):
        pieces.append((context[position:], None))
    return pieces


def summary(result: qa.Answer, model: str) -> str:
    who = html.escape(model)
    if result.way == qa.GENERATIVE:
        if not result.answer:
            return f"**The context does not say**, answers the chat model **{who}**."
        where = ("The words it took from the context are highlighted." if result.spans else
                 "It shares no telling word with the context, so nothing is highlighted: check the answer.")
        return (f"**{html.escape(result.answer)}**  \nAnswered by the chat model **{who}** from a prompt that holds "
                f"the context (it may word the answer itself; an extractive model picks a span of the context). "
                f"{where}")
    windows = f" The context was read in {result.windows} overlapping windows." if result.windows > 1 else ""
    if not result.answer:
        best = f" The best span, '{html.escape(result.spans[0].text)}', scored {result.spans[0].score:.3f}." \
            if result.spans else ""
        return (f"**No answer in the context**, says the extractive model **{who}** (its 'no answer' score, "
                f"{result.no_answer_score:.3f}, beats every span).{best}{windows}")
    return (f"**{html.escape(result.answer)}** (score {result.spans[0].score:.3f})  \nA span of the context, picked "
            f"by the extractive model **{who}**.{windows}")


def build(ctx: AppContext) -> None:
    gr.Markdown("Ask a question about a text. An extractive model (trained on SQuAD) picks the answer from the "
                "text; a chat model (such as the packaged SmolLM2, which works offline) answers from a prompt "
                "that holds the text.")
    model = model_picker(ctx, QUESTION_ANSWERING)
    with gr.Row():
        with gr.Column():
            context = gr.Textbox(label="Context", lines=6, value=EXAMPLE_CONTEXT)
            question = gr.Textbox(label="Question", value=EXAMPLE_QUESTION)
            top_k = setting_slider(1, MAX_ANSWER_TOP_K, "Answers to list (extractive models)", value=3, step=1)
            precision, _, show_precision = precision_picker(ctx, QUESTION_ANSWERING, model)
            button = gr.Button("Answer", variant="primary")
        with gr.Column():
            outcome = gr.Markdown(elem_id="qa-outcome")
            shown = gr.HighlightedText(label="The answer in the context", elem_id="qa-context",
                                       color_map={"answer": "#22c55e", "other candidate": "#fde68a"},
                                       show_legend=True)
    spans = gr.Dataframe(label="Candidate answers", elem_id="qa-spans", interactive=False,
                         headers=["rank", "answer", "score", "start", "end"])

    @show_errors
    def ask(context, question, model, top_k=3, precision=None):
        """The answer to the question from the context: a span picked by an extractive model
        (with the top-k candidates and their scores), or a chat model's grounded answer."""
        result = qa.answer(ctx.registry, model, context, question, int(top_k), precision)
        rows = [{"rank": rank, "answer": span.text, "score": None if span.score is None else round(span.score, 4),
                 "start": span.start, "end": span.end} for rank, span in enumerate(result.spans, start=1)]
        return (summary(result, model), highlighted_context(context, result),
                pd.DataFrame(rows, columns=["rank", "answer", "score", "start", "end"]))

    wiring = dict(inputs_kwargs=dict(context=context, question=question, model=model, top_k=top_k,
                                     precision=precision),
                  outputs=[outcome, shown, spans])
    busy_click(button, "Answering…", ask, api_name="answer", **wiring).then(**show_precision)
    question.submit(ask, api_visibility="private", show_progress="hidden", **wiring).then(**show_precision)
