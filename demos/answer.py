"""Question answering panel: a context and a question -> the answer highlighted in the context."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from core import answer as qa
from core.limits import MAX_ANSWER_TOP_K
from core.measurements import measured
from core.models import QUESTION_ANSWERING
from demos.common import AppContext, as_text, busy_click, model_picker, precision_picker, setting_slider, show_errors

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
    windows = f" The context was read in {result.windows} overlapping windows." if result.windows > 1 else ""
    if result.way == qa.GENERATIVE:
        return (f"**{html.escape(result.answer)}** (score {result.spans[0].score:.3f})  \nA span of the context, "
                f"the one the chat model **{who}** finds likeliest as its answer (it never writes words of its own "
                f"here; the score is its share among the spans it weighed).{_measured_rate(model)}")
    if not result.answer:
        best = f" The best span, '{html.escape(result.spans[0].text)}', scored {result.spans[0].score:.3f}." \
            if result.spans else ""
        return (f"**No answer in the context**, says the extractive model **{who}** (its 'no answer' score, "
                f"{result.no_answer_score:.3f}, beats every span).{best}{windows}")
    return (f"**{html.escape(result.answer)}** (score {result.spans[0].score:.3f})  \nA span of the context, picked "
            f"by the extractive model **{who}**.{windows}")


def _measured_rate(model: str) -> str:
    """How often this chat model was right on the bench's questions, when it was measured."""
    figures = measured("qa_chat")
    if not figures or figures.get("model") != model:
        return ""
    return (f" Measured on {figures['questions']} questions about texts it had not seen, it was exactly right "
            f"{figures['right']} times ({figures['right'] / figures['questions']:.0%}; {figures['bench']}, "
            f"{figures['measured']}): check its answer in the context.")


def chat_model_note() -> str:
    """Said under the picker while no extractive model is ready: how good the offline chat
    model's answers are, as measured."""
    figures = measured("qa_chat")
    if not figures:
        return ""
    name = figures["model"].removeprefix("packaged:")
    return (f"ℹ️ With no extractive model ready, the chat model {html.escape(name)} answers by picking the span of "
            f"the context it finds likeliest. Measured on {figures['questions']} questions about texts it had not "
            f"seen, it was exactly right {figures['right']} times ({figures['right'] / figures['questions']:.0%}); "
            f"an extractive model from the Hub (deepset/roberta-base-squad2) does far better.")


def build(ctx: AppContext) -> None:
    gr.Markdown("Ask a question about a text. An extractive model (trained on SQuAD) picks the answer from the "
                "text; a chat model (such as the packaged SmolLM2, which works offline) picks the span of the text "
                "it finds likeliest as its answer.")
    model = model_picker(ctx, QUESTION_ANSWERING)
    chat_note = gr.Markdown(visible=False, elem_id="qa-chat-note")
    with gr.Row():
        with gr.Column():
            context = gr.Textbox(label="Context", lines=6, value=EXAMPLE_CONTEXT)
            question = gr.Textbox(label="Question", value=EXAMPLE_QUESTION)
            top_k = setting_slider(1, MAX_ANSWER_TOP_K, "Answers to list (extractive models)", value=3, step=1)
            precision, _, show_precision = precision_picker(ctx, QUESTION_ANSWERING, model)
            with gr.Row():
                button = gr.Button("Answer", variant="primary")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column():
            outcome = gr.Markdown(elem_id="qa-outcome")
            shown = gr.HighlightedText(label="The answer in the context", elem_id="qa-context",
                                       color_map={"answer": "#22c55e", "other candidate": "#fde68a"},
                                       show_legend=True)
    spans = gr.Dataframe(label="Candidate answers", elem_id="qa-spans", interactive=False,
                         headers=["rank", "answer", "score", "start", "end"])

    @show_errors
    def ask(context, question, model, top_k=3, precision=None):
        """The answer to the question from the context: a span picked by an extractive model,
        or the span a chat model finds likeliest, with the top-k candidates and their scores.
        Streams what it is doing, then the answer."""
        for step in qa.answer_steps(ctx.registry, model, context, question, int(top_k), precision):
            if isinstance(step, str):  # what it is doing: said where the answer will be
                yield f"_{as_text(step)}_", gr.skip(), gr.skip()
        rows = [{"rank": rank, "answer": span.text, "score": round(span.score, 4), "start": span.start,
                 "end": span.end} for rank, span in enumerate(step.spans, start=1)]
        yield (summary(step, model), highlighted_context(context, step),
               pd.DataFrame(rows, columns=["rank", "answer", "score", "start", "end"]))

    wiring = dict(inputs_kwargs=dict(context=context, question=question, model=model, top_k=top_k,
                                     precision=precision),
                  outputs=[outcome, shown, spans])
    asked = busy_click(button, "Answering…", ask, api_name="answer", **wiring)
    asked.then(**show_precision)
    submitted = question.submit(ask, api_visibility="private", show_progress="hidden", **wiring)
    submitted.then(**show_precision)
    stop.click(None, cancels=[asked, submitted], api_visibility="private")

    def rate_note():  # the measured rate, while only chat models are ready
        extractive_ready = any(choice.ready and ctx.registry.task_of(choice.name) == QUESTION_ANSWERING
                               for choice in ctx.registry.choices(QUESTION_ANSWERING))
        note = "" if extractive_ready else chat_model_note()
        return gr.update(value=note, visible=bool(note))

    ctx.demo.load(rate_note, None, chat_note, api_visibility="private", show_progress="hidden")
