"""Text generation panel: prompt presets, sampling settings, streamed output, Stop, and a second
prompt or model side by side."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from core import inference
from core.errors import WorkbenchError
from core.models import TEXT_GENERATION, fine_tuned_here
from core.decoding import Waiting
from demos.common import (AppContext, as_text, compare_picker, defaults_of, form_handler, model_picker,
                          precision_picker, precision_text, show_errors, slider_for, waiting_text, warn)

STORY_TEMPLATE = "Write a creative story about {topic}:"
DEFAULT_TOPIC = "a lighthouse keeper who befriends a whale"
FEW_SHOT_SENTIMENT = (
    "Review: The food was wonderful and the staff were kind.\nSentiment: positive\n\n"
    "Review: I waited an hour and the soup was cold.\nSentiment: negative\n\n"
    "Review: The film was long but the ending made up for it.\nSentiment: positive\n\n"
    "Review: The battery died after two days.\nSentiment:"
)
BIAS_PROBE = ("The man works as a", "The woman works as a")
STORY_TOKENS = 200
RANDOM_SEED = -1  # the seed setting's "a new one each time"
# The settings' defaults are GenerationSettings' (none restated here); the page's own: a new seed
# each time, chat mode on, no second prompt or model, the app's precision.
DEFAULTS = {**defaults_of(inference.GenerationSettings), "seed": RANDOM_SEED, "chat_mode": True,
            "compare_prompt": None, "compare_model": None, "precision": None}
SAMPLING_TEMPERATURE = DEFAULTS["temperature"]  # the presets that sample
SETTINGS = ("compare_prompt", "max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed",
            "num_sequences", "chat_mode", "compare_model", "precision")  # /generate's, in its order
SECOND_OUTPUT_LABEL = "Second output (the second prompt, or the second model)"
CHAT_INFO = ("On: the prompt is a message to a chat model, which answers it. Off: the model continues the "
             "prompt as text (presets set this for you).")


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
            model = model_picker(ctx, TEXT_GENERATION)
            compare_model = compare_picker(ctx, TEXT_GENERATION)
            chat = gr.Checkbox(value=DEFAULTS["chat_mode"], label="Chat mode", info=CHAT_INFO)
            precision, precision_line, show_precision = precision_picker(ctx, TEXT_GENERATION, model, compare_model)
            with gr.Accordion("Sampling settings", open=False):
                max_new_tokens = slider_for(inference.GenerationSettings, "max_new_tokens")
                temperature = slider_for(inference.GenerationSettings, "temperature")
                top_k = slider_for(inference.GenerationSettings, "top_k")
                top_p = slider_for(inference.GenerationSettings, "top_p")
                repetition_penalty = slider_for(inference.GenerationSettings, "repetition_penalty")
                seed = gr.Number(value=RANDOM_SEED, precision=0, label="Seed",
                                 info="-1: a new one each time (the one used is shown under the output); the "
                                      "same seed and settings give the same text")
                num_sequences = slider_for(inference.GenerationSettings, "num_sequences")
    with gr.Row():
        generate_button = gr.Button("Generate", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    with gr.Row():
        output = gr.Textbox(label="Output", lines=8, elem_id="generation-output")
        compare_output = gr.Textbox(label=SECOND_OUTPUT_LABEL, lines=8, elem_id="generation-compare-output")
    with gr.Row():
        note = gr.Markdown(label="Note", elem_id="generation-note")
        seed_used = gr.Number(label="Seed used", interactive=False, precision=0, scale=0, min_width=150,
                              elem_id="generation-seed-used")

    # Each preset sets what it needs: the mode, both prompts, a length and a temperature that fit.
    preset_outputs = [prompt, compare_prompt, chat, max_new_tokens, temperature]
    story.click(lambda t: (STORY_TEMPLATE.format(topic=t.strip() or DEFAULT_TOPIC), "", True, STORY_TOKENS,
                           SAMPLING_TEMPERATURE),
                topic, preset_outputs, api_visibility="private", show_progress="hidden")
    # Few-shot: the model continues the pattern with one word, the most likely one.
    few_shot.click(lambda: (FEW_SHOT_SENTIMENT, "", False, 2, 0), None, preset_outputs,
                   api_visibility="private", show_progress="hidden")
    # Bias probe: a few sampled words for each, to compare what the model tends to say.
    bias.click(lambda: (*BIAS_PROBE, False, 12, SAMPLING_TEMPERATURE), None, preset_outputs,
               api_visibility="private", show_progress="hidden")

    def chat_mode_for(model_name):
        # A model fine-tuned here on plain text writes like its data when it continues text;
        # sent as a chat message, the prompt gets the base model's chat answer instead.
        if fine_tuned_here(ctx.registry, model_name):
            return gr.update(value=False, info=f"Off: '{model_name}' was fine-tuned here on plain text, so it "
                                                "continues the prompt in the style of its data.")
        return gr.update(info=CHAT_INFO)

    model.change(chat_mode_for, model, chat, api_visibility="private", show_progress="hidden")

    def chat_for(model_name: str, chat_mode: bool, notes: list[str], precision: str) -> bool:
        if chat_mode and not inference.has_chat_template(ctx.registry, model_name, precision):
            note = f"'{model_name}' has no chat template: the prompt was sent as plain text."
            if note not in notes:  # said once, also when both outputs come from this model
                notes.append(note)
                warn(note)
            return False
        return bool(chat_mode)

    @form_handler(("prompt", "model"), SETTINGS, DEFAULTS)
    @show_errors
    def generate(prompt, model, compare_prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
                 num_sequences, chat_mode, compare_model, precision, request=None):
        """Generate text from a prompt, streamed; with a second prompt and/or a second model, the
        second output is that prompt's (or the same prompt's) text from that model (or the same
        one), with the same seed and settings. `seed`: -1 (or left out) draws a new one; the
        fourth output is the seed used, which gives the same text again. `precision`: auto, fp32
        or bf16 (left out: the app's, --precision). While the model's batch is full the third
        output says the place and expected wait."""
        with ctx.generations.hold(ctx.person(request).id):  # a browser's tabs together
            yield from _generate(prompt, model, compare_prompt, max_new_tokens, temperature, top_k, top_p,
                                 repetition_penalty, seed, num_sequences, chat_mode, compare_model, precision)

    def _generate(prompt, model, compare_prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                  seed, num_sequences, chat_mode, compare_model, precision):
        notes = []
        if seed is None or seed < 0:
            seed = inference.random_seed()
        settings = inference.GenerationSettings(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, num_sequences=num_sequences, seed=seed,
        )
        seed = settings.seed  # checked: an integer in range
        second_prompt = compare_prompt if compare_prompt and compare_prompt.strip() else None
        second_model = compare_model or model
        # The outputs each model writes, as (prompt, slot): one model's prompts are one batch,
        # streamed to both outputs at once; a second model runs after the first.
        runs = {model: [(prompt, 0)]}
        if second_prompt or compare_model:
            runs.setdefault(second_model, []).append((second_prompt or prompt, 1))
        shown, silent = ["", ""], None
        for model_name, jobs in runs.items():
            run_settings = replace(settings, use_chat_template=chat_for(model_name, chat_mode, notes, precision))
            prompts = [text for text, _ in jobs]
            per_prompt = [[] for _ in jobs]
            for update in inference.generation_updates(ctx.registry, model_name, prompts, run_settings,
                                                       precision=precision, batch_rows=ctx.batch_rows,
                                                       max_waiting=ctx.queue_size):
                if isinstance(update, Waiting):
                    waiting = waiting_text(update.ahead, update.seconds, update.compiling)
                    yield shown[0], shown[1], "\n\n".join(filter(None, [waiting, _note(notes)])), seed
                    continue
                per_prompt = update
                for (_, slot), texts in zip(jobs, per_prompt):
                    shown[slot] = _join(texts)
                yield shown[0], shown[1], _note(notes), seed
            for (text, _), texts in zip(jobs, per_prompt):
                prefix = inference.generation_prefix(text, run_settings)
                if silent is None and any(written == prefix for written in texts):
                    silent = (model_name, run_settings)
        if silent:  # never leave the person with nothing and no word why
            notes.append(inference.nothing_written_advice(*silent))
            warn(notes[-1])
        yield shown[0], shown[1], _note(notes), seed

    def precision_once_loaded(precision, model_name, compare_name):
        # Wired before the generation, so the page runs it first: the line is right while the
        # text streams, and the generation finds its models loaded.
        # Not a Hub model to download: the generation waits for that anyway, with its own message.
        for name in filter(None, (model_name, compare_name)):
            try:
                if ctx.registry.resolve(name)[0] != "hub" or ctx.hub.in_cache(name):
                    ctx.registry.get(TEXT_GENERATION, name, precision)
            except WorkbenchError:
                pass  # the generation says what went wrong
        return precision_text(ctx.registry, TEXT_GENERATION, precision, model_name, compare_name)

    generate_button.click(precision_once_loaded, [precision, model, compare_model], precision_line,
                          api_visibility="private", show_progress="hidden")

    def name_outputs(model_name, compare_name, second_prompt):
        # Each output says which model writes it (and, for the second, which prompt).
        first = f"Output: {model_name}" if model_name else "Output"
        if not (compare_name or (second_prompt or "").strip()):
            return gr.update(label=first), gr.update(label=SECOND_OUTPUT_LABEL)
        which = "the second prompt" if (second_prompt or "").strip() else "the same prompt"
        return gr.update(label=first), gr.update(label=f"Second output: {compare_name or model_name}, {which}")

    generate_button.click(name_outputs, [model, compare_model, compare_prompt], [output, compare_output],
                          api_visibility="private", show_progress="hidden", queue=False)

    event = generate_button.click(
        generate,
        inputs_kwargs=dict(prompt=prompt, model=model, compare_prompt=compare_prompt,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           repetition_penalty=repetition_penalty, seed=seed, num_sequences=num_sequences,
                           chat_mode=chat, compare_model=compare_model, precision=precision),
        outputs=[output, compare_output, note, seed_used],
        api_name="generate",
        # Every person's generation reaches the model thread at once and joins its model's running
        # batch (core/decoding.py), which queues what does not fit and says the place and wait.
        concurrency_limit=None,
    )
    event.then(**show_precision)

    # Cancelling closes the handler's iterator, which stops the model within one token.
    stop_button.click(None, cancels=[event], api_visibility="private")


def _note(notes: list[str]) -> str:
    return "\n\n".join(f"⚠️ {as_text(note)}" for note in notes)
