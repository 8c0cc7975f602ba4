"""The workflows a person follows, on the real packaged SmolLM2 (not only the tiny models): a few
steps on short blocks, so each takes seconds, but through the code a real run takes. (Upload,
train, save and write with it is test_browser_workflows.py's, in the browser.)"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT, SMOLLM2
from core import inference
from core.inference import GenerationSettings
from core.models import TEXT_GENERATION, ModelRegistry
from test_app_finetune import finetune_args, wait_for_live_step, wait_for_state

STORY_LINES = ["The lighthouse keeper climbed the stairs every evening.", "She lit the lamp and watched the sea.",
               "One night a whale sang below the rocks.", "The keeper sang back, and the whale stayed."]


def story_file(tmp_path, repeats: int = 12):
    path = tmp_path / "story.txt"
    path.write_text("\n".join(STORY_LINES * repeats) + "\n", encoding="utf-8")
    return path


def smollm2_args(path, name, **overrides):
    settings = dict(task="causal-lm", base_model=SMOLLM2, text_column=None, label_column=None, epochs=1,
                    batch_size=4, max_length=32, learning_rate=5e-5)
    return finetune_args(path, name, **{**settings, **overrides})


def generated_by(client, model: str) -> str:
    text, _, note, _ = client.predict(prompt="The lighthouse keeper", model=model, chat_mode=False, temperature=0,
                                   max_new_tokens=12, api_name="/generate")
    assert note == "", note
    return text


def test_smollm2_cancelled_midway_is_saved_with_what_it_learned(ft_client, finetune_server, tmp_path):
    ft_client.predict(**smollm2_args(story_file(tmp_path, repeats=40), "keeper-partial", epochs=3, batch_size=2),
                      api_name="/finetune")
    wait_for_live_step(ft_client, "keeper-partial", timeout=120)
    ft_client.predict(api_name="/finetune_cancel")
    wait_for_state(ft_client, "cancelled", timeout=120)
    ft_client.predict(api_name="/finetune_save")
    saved = wait_for_state(ft_client, "finished", "save failed", timeout=120)
    assert saved["message"].startswith("Saved the partly trained model as 'keeper-partial'"), saved
    assert generated_by(ft_client, "keeper-partial").startswith("The lighthouse keeper")


def test_smollm2_with_lora_from_the_command_line_saves_a_model_the_panel_loads(smollm2_folder, tmp_path):
    output = tmp_path / "models" / "keeper-lora"
    run = subprocess.run(
        [sys.executable, "-m", "core.training", "--task", "causal-lm", "--model", SMOLLM2, "--train",
         str(story_file(tmp_path)), "--epochs", "1", "--batch-size", "4", "--max-length", "32", "--lora",
         "--learning-rate", "1e-3", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (output / "model.safetensors").is_file() and not (output / "adapter_config.json").exists()
    registry = ModelRegistry(output.parent)
    assert "keeper-lora" in [choice.name for choice in registry.choices(TEXT_GENERATION)]
    *_, final = inference.generate_stream(registry, "keeper-lora", "The lighthouse keeper",
                                          GenerationSettings(max_new_tokens=8, temperature=0))
    assert final[0].startswith("The lighthouse keeper") and len(final[0]) > len("The lighthouse keeper")


def test_a_question_in_plain_mode_gets_a_message_not_an_empty_answer(client):
    """SmolLM2 takes a bare question as finished text and ends at once: the panel says so."""
    text, _, note, _ = client.predict(prompt="What is the capital of France?", model=SMOLLM2, chat_mode=False,
                                   temperature=0, max_new_tokens=20, api_name="/generate")
    assert text == "What is the capital of France?"  # the prompt, not nothing
    assert "ended at once, without writing anything" in note and "Chat mode" in note
    answer, _, note, _ = client.predict(prompt="What is the capital of France?", model=SMOLLM2, chat_mode=True,
                                     temperature=0, max_new_tokens=20, api_name="/generate")
    assert "Paris" in answer and note == ""


def test_a_generation_that_writes_nothing_still_yields_the_prompt(smollm2_folder, tmp_path):
    registry = ModelRegistry(tmp_path / "none")
    prompt = "What is the capital of France?"
    texts = list(inference.generate_stream(registry, SMOLLM2, prompt, GenerationSettings(max_new_tokens=10,
                                                                                        temperature=0)))
    assert texts == [[prompt]]  # one answer, the prompt alone: the caller can tell nothing was written
