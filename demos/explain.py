"""Inside the model panel: attention heatmaps, token probabilities and "why this label"."""

from __future__ import annotations

import html
from dataclasses import asdict

import gradio as gr
import pandas as pd

from core import explain
from core.limits import MAX_PROBABILITY_TOKENS, MAX_PROBABILITY_TOP_K
from core.models import FILL_MASK, TEXT_CLASSIFICATION, TEXT_GENERATION
from demos.common import (MODEL_API_HINT, AppContext, picker_state, add_picker, busy_click, example_model,
                          model_picker, open_dropdown, refreshed_picker, setting_slider, show_errors)

ATTENTION_KINDS = [("Text generation (a decoder: masked attention)", TEXT_GENERATION),
                   ("Sentiment / classification (an encoder)", TEXT_CLASSIFICATION),
                   ("Fill-mask (an encoder)", FILL_MASK)]
PREDICTED = "the predicted class"


# ----- views: plain HTML, so that every cell and token can say its value on hover ---------------
def attention_html(view: explain.AttentionMap) -> str:
    """Token x token heatmap: row i is the token attending, column j the token it attends to,
    shaded by the weight; a decoder's masked cells (j > i) are hatched."""
    tokens = [html.escape(token) for token in view.tokens]
    head = "".join(f'<th scope="col" class="attn-col"><span>{token}</span></th>' for token in tokens)
    rows = ""
    for i, (token, weights) in enumerate(zip(tokens, view.weights)):
        cells = ""
        for j, weight in enumerate(weights):
            if view.causal and j > i:
                cells += '<td class="attn-masked" title="masked: a token cannot see later tokens"></td>'
                continue
            cells += (f'<td title="{token} → {tokens[j]}: {weight:.3f}" '
                      f'style="background: rgba(79, 70, 229, {weight:.3f})"></td>')
        rows += f'<tr><th scope="row">{token}</th>{cells}</tr>'
    style = ("<style>#attention-heatmap .attn-wrap{overflow:auto;max-height:70vh}"
             "#attention-heatmap table{border-collapse:collapse;font-size:12px}"
             "#attention-heatmap td{width:18px;min-width:18px;height:18px;border:1px solid #e5e7eb;padding:0}"
             "#attention-heatmap th{font-weight:normal;white-space:nowrap;padding:0 4px;text-align:right}"
             "#attention-heatmap .attn-col{vertical-align:bottom;height:90px;padding:0}"
             "#attention-heatmap .attn-col span{writing-mode:vertical-rl;transform:rotate(180deg)}"
             "#attention-heatmap .attn-masked{background:repeating-linear-gradient(45deg,#f3f4f6,#f3f4f6 3px,"
             "#e5e7eb 3px,#e5e7eb 6px)}</style>")
    return f'{style}<div class="attn-wrap"><table><tr><th></th>{head}</tr>{rows}</table></div>'


def attention_caption(view: explain.AttentionMap, model: str) -> str:
    head = "the mean over its heads" if view.head == explain.MEAN_OVER_HEADS else f"head {view.head}"
    text = (f"**{html.escape(model)}**, layer {view.layer} of {view.layers}, {head} (of {view.heads}); "
            f"{len(view.tokens)} tokens. Each row is a token and how it spreads its attention over the "
            f"tokens in the columns (each row adds up to 1); hover a cell for its weight.")
    if view.causal:
        text += " A decoder's token sees only itself and the tokens before it: the hatched cells are masked."
    if view.truncated:
        text += f" The text was cut to its first {len(view.tokens)} tokens."
    return text


def _shade(probability: float) -> str:
    """Red for tokens the model thought unlikely, through yellow, to green for likely ones."""
    return f"hsl({120 * probability:.0f}, 75%, 80%)"


def probabilities_html(choices: list[explain.TokenChoice]) -> str:
    spans = []
    for choice in choices:
        alternatives = "&#10;".join(f"{html.escape(token)}: {p:.1%}" for token, p in choice.alternatives)
        spans.append(f'<span class="token-prob" style="background:{_shade(choice.probability)}" '
                     f'title="{html.escape(choice.token)}: {choice.probability:.1%}&#10;'
                     f'top alternatives:&#10;{alternatives}">{html.escape(choice.text)}</span>')
    style = ("<style>#token-probabilities .token-prob{white-space:pre-wrap;border-radius:3px;padding:1px 0;"
             "line-height:1.9;color:#111}</style>")
    legend = ('<p style="font-size:12px">Colour: the model\'s probability for each token it wrote, '
              f'<span style="background:{_shade(0)}">unlikely</span> → '
              f'<span style="background:{_shade(0.5)}">50%</span> → '
              f'<span style="background:{_shade(1)}">certain</span>. Hover a token for its alternatives.</p>')
    return f'{style}{legend}<div>{"".join(spans)}</div>'


def attribution_html(result: explain.Attribution) -> str:
    spans = []
    for token, score in zip(result.tokens, result.scores):
        colour = f"rgba(22, 163, 74, {score:.2f})" if score >= 0 else f"rgba(220, 38, 38, {-score:.2f})"
        spans.append(f'<span class="attribution" title="{html.escape(token)}: {score:+.2f}" '
                     f'style="background:{colour}">{html.escape(token)}</span>')
    style = ("<style>#attributions .attribution{display:inline-block;margin:2px 3px;padding:1px 4px;"
             "border-radius:3px;color:#111}</style>")
    return f'{style}<div>{"".join(spans)}</div>'


def attribution_caption(result: explain.Attribution, model: str) -> str:
    text = (f"Why **{html.escape(model)}** says **{html.escape(result.label)}** ({result.probability:.0%}"
            + ("" if result.label == result.predicted else f"; it predicts {html.escape(result.predicted)}")
            + "): green tokens push towards that class, red ones away from it, the strongest at full colour "
            "(captum's integrated gradients on the word embeddings, from a text of pad tokens).")
    if result.delta > 0.05:
        text += f" The estimate is rough here (convergence error {result.delta:.2f})."
    if result.truncated:
        text += f" The text was cut to its first {len(result.tokens)} tokens."
    return text


# ----- the panel --------------------------------------------------------------------------------
def build(ctx: AppContext) -> None:
    gr.Markdown("Look inside a model: where its attention goes, how sure it was of each word it wrote, and "
                "which words made a classifier choose its label. The models are read in float32 here, "
                "whatever precision the other panels use, so the numbers shown are exact.")
    with gr.Accordion("Attention", open=True, elem_id="inside-attention"):
        _attention_section(ctx)
    with gr.Accordion("Token probabilities in generation", open=True, elem_id="inside-probabilities"):
        _probabilities_section(ctx)
    with gr.Accordion("Why this label", open=True, elem_id="inside-attributions"):
        _attribution_section(ctx)


def _attention_section(ctx: AppContext) -> None:
    with gr.Row():
        with gr.Column():
            kind = gr.Radio(ATTENTION_KINDS, value=TEXT_GENERATION, label="Kind of model")
            choices, value, _ = picker_state(ctx.registry, TEXT_GENERATION)
            model = open_dropdown(MODEL_API_HINT, api_example=example_model(choices, value), choices=choices,
                                  value=value, label="Model", info="Any model of that kind: packaged, local or a Hub id.")
            text = gr.Textbox(label="Text", lines=2, value="The cat sat on the mat because it was tired.")
            with gr.Row():
                layer = gr.Number(value=1, precision=0, label="Layer", info="1 is the first")
                head = gr.Number(value=explain.MEAN_OVER_HEADS, precision=0, label="Head",
                                 info="0: the mean over heads")
            button = gr.Button("Show attention", variant="primary")
        with gr.Column(scale=2):
            caption = gr.Markdown(elem_id="attention-caption")
            heatmap = gr.HTML(elem_id="attention-heatmap")
    with gr.Accordion("Values (JSON)", open=False):
        values = gr.JSON(elem_id="attention-values")

    def switch_kind(task):  # another kind of model: that kind's default
        return refreshed_picker(ctx.registry, task, None)[0]

    kind.input(switch_kind, kind, model, api_visibility="private", show_progress="hidden")
    # It follows the models folder with every other picker, listing the kind chosen now.
    add_picker(ctx, model, lambda current, task: picker_state(ctx.registry, task), depends_on=(kind,))

    @show_errors
    def show_attention(text, model, task=TEXT_GENERATION, layer=1, head=explain.MEAN_OVER_HEADS):
        """The attention weights of one layer and head (0: the mean over heads) between the
        text's tokens; task: text-generation, text-classification or fill-mask."""
        view = explain.attention(ctx.registry, task, model, text, int(layer), int(head))
        return attention_caption(view, model), attention_html(view), asdict(view)

    busy_click(button, "Reading the attention…", show_attention, api_name="attention",
               inputs_kwargs=dict(text=text, model=model, task=kind, layer=layer, head=head),
               outputs=[caption, heatmap, values])


def _probabilities_section(ctx: AppContext) -> None:
    model = model_picker(ctx, TEXT_GENERATION)
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", lines=2, value="Once upon a time, there was a")
            continuation = gr.Textbox(value="", label="Continuation to score (optional)", lines=2,
                                      info="Empty: the model writes one, always taking its most likely token.")
            with gr.Row():
                new_tokens = setting_slider(1, MAX_PROBABILITY_TOKENS, "Tokens to write", value=20, step=1)
                top_k = setting_slider(1, MAX_PROBABILITY_TOP_K, "Alternatives per token", value=5, step=1)
            button = gr.Button("Show token probabilities", variant="primary")
        with gr.Column():
            coloured = gr.HTML(elem_id="token-probabilities")
    table = gr.Dataframe(label="Each token, its probability and the alternatives at that step",
                         elem_id="token-probability-table", interactive=False,
                         headers=["step", "token", "probability", "alternatives"])

    @show_errors
    def show_probabilities(prompt, model, continuation="", max_new_tokens=20, top_k=5):
        """Each token of a continuation of the prompt (written greedily when none is given)
        with the model's probability for it and the top-k alternatives at that step."""
        choices = explain.token_probabilities(ctx.registry, model, prompt, continuation or "", int(max_new_tokens),
                                              int(top_k))
        rows = [{"step": step, "token": choice.token, "probability": round(choice.probability, 4),
                 "alternatives": ", ".join(f"{token} {p:.1%}" for token, p in choice.alternatives)}
                for step, choice in enumerate(choices, start=1)]
        return probabilities_html(choices), pd.DataFrame(rows)

    busy_click(button, "Scoring…", show_probabilities, api_name="token_probabilities",
               inputs_kwargs=dict(prompt=prompt, model=model, continuation=continuation, max_new_tokens=new_tokens,
                                  top_k=top_k),
               outputs=[coloured, table])


def _attribution_section(ctx: AppContext) -> None:
    model = model_picker(ctx, TEXT_CLASSIFICATION)
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text", lines=2, value="The film was long, but the ending was wonderful.")
            label = open_dropdown("a class of the model; empty: the predicted one", choices=[(PREDICTED, "")],
                                  value="", label="Explain the class")
            button = gr.Button("Explain", variant="primary")
        with gr.Column():
            caption = gr.Markdown(elem_id="attributions-caption")
            coloured = gr.HTML(elem_id="attributions")

    def classes_of(model_name):  # read from the model's config: nothing is loaded for this
        return gr.update(choices=[(PREDICTED, "")] + ctx.registry.known_classes(model_name), value="")

    model.change(classes_of, model, label, api_visibility="private", show_progress="hidden")
    ctx.demo.load(classes_of, model, label, api_visibility="private", show_progress="hidden")

    @show_errors
    def explain_label(text, model, label=""):
        """Per-token attributions (integrated gradients) for a class of the classifier: the
        predicted one when label is empty."""
        chosen = None if label in ("", None, PREDICTED) else label
        result = explain.attributions(ctx.registry, model, text, chosen)
        return attribution_caption(result, model), attribution_html(result)

    busy_click(button, "Explaining…", explain_label, api_name="attributions",
               inputs_kwargs=dict(text=text, model=model, label=label), outputs=[caption, coloured])
