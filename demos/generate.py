"""Text generation panel: prompt presets, sampling settings, streamed output, Stop."""

from __future__ import annotations

import gradio as gr

from core import inference
from core.limits import DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, MAX_NUM_SEQUENCES
from core.models import TEXT_GENERATION
from demos.common import AppContext, model_picker, show_errors

STORY_TEMPLATE = "Write a creative story about {topic}:"
DEFAULT_TOPIC = "a lighthouse keeper who befriends a whale"
FEW_SHOT_SENTIMENT = (
    "Review: The food was wonderful and the staff were kind.\nSentiment: positive\n\n"
    "Review: I waited an hour and the soup was cold.\nSentiment: negative\n\n"
    "Review: The film was long but the ending made up for it.\nSentiment: positive\n\n"
    "Review: The battery died after two days.\nSentiment:"
)
BIAS_PROBE = ("The man works as a", "The woman works as a")


def _join(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(f"[{number}] {text}" for number, text in enumerate(texts, start=1))


def build(ctx: AppContext) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=4, placeholder="Once upon a time")
            compare_prompt = gr.Textbox(
                label="Compare with a second prompt (optional)", lines=1,
                placeholder="Generated side by side with the same settings",
            )
            with gr.Row():
                topic = gr.Textbox(label="Story topic", value=DEFAULT_TOPIC, scale=3)
                story = gr.Button("Story template", size="sm", scale=1)
                few_shot = gr.Button("Few-shot sentiment", size="sm", scale=1)
                bias = gr.Button("Bias probe (man / woman)", size="sm", scale=1)
        with gr.Column(scale=2):
            model = model_picker(ctx, TEXT_GENERATION, api_name="generation_models")
            chat = gr.Checkbox(
                value=True, label="Chat mode",
                info="Send the prompt as a user message, for models with a chat template.",
            )
            with gr.Accordion("Sampling settings", open=False):
                max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_NEW_TOKENS, step=1,
                                           label="Max new tokens")
                temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature",
                                        info="0 = always the most likely token")
                top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k", info="0 = off")
                top_p = gr.Slider(0.05, 1, value=0.95, step=0.05, label="Top-p")
                repetition_penalty = gr.Slider(1, 2, value=1.1, step=0.05, label="Repetition penalty")
                seed = gr.Number(value=0, precision=0, label="Seed",
                                 info="Same seed and settings give the same text; -1 = random")
                num_sequences = gr.Slider(1, MAX_NUM_SEQUENCES, value=1, step=1,
                                          label="Number of sequences")
    with gr.Row():
        generate_button = gr.Button("Generate", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    with gr.Row():
        output = gr.Textbox(label="Output", lines=8, elem_id="generation-output")
        compare_output = gr.Textbox(label="Output for the second prompt", lines=8,
                                    elem_id="generation-compare-output")

    story.click(lambda t: STORY_TEMPLATE.format(topic=t.strip() or DEFAULT_TOPIC), topic, prompt,
                api_visibility="private")
    few_shot.click(lambda: FEW_SHOT_SENTIMENT, None, prompt, api_visibility="private")
    bias.click(lambda: BIAS_PROBE, None, [prompt, compare_prompt], api_visibility="private")

    @show_errors
    def generate(prompt_text, compare_text, model_name, new_tokens, temp, k, p, penalty, seed_value,
                 sequences, chat_mode):
        use_chat = bool(chat_mode)
        if use_chat and not inference.has_chat_template(ctx.registry, model_name):
            gr.Warning(f"'{model_name}' has no chat template: the prompt is sent as plain text.")
            use_chat = False
        settings = inference.GenerationSettings(
            max_new_tokens=new_tokens, temperature=temp, top_k=k, top_p=p,
            repetition_penalty=penalty, num_sequences=sequences, use_chat_template=use_chat,
            seed=None if seed_value is None or seed_value < 0 else seed_value,
        )
        first = ""
        for texts in inference.generate_stream(ctx.registry, model_name, prompt_text, settings):
            first = _join(texts)
            yield first, ""
        if compare_text and compare_text.strip():
            for texts in inference.generate_stream(ctx.registry, model_name, compare_text, settings):
                yield first, _join(texts)

    event = generate_button.click(
        generate,
        inputs=[prompt, compare_prompt, model, max_new_tokens, temperature, top_k, top_p,
                repetition_penalty, seed, num_sequences, chat],
        outputs=[output, compare_output],
        api_name="generate",
    )
    # Cancelling closes the handler's iterator, which stops the model within one token.
    stop_button.click(None, cancels=[event], api_visibility="private")
