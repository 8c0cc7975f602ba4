"""Hardening through the public API: odd text, odd files, out-of-range settings, model faults,
access. Each case gets a clear message (or is handled), changes nothing, and the server keeps
serving."""

from __future__ import annotations

import csv
import io
import shutil
import urllib.error
import urllib.request
import zipfile

import pytest
from gradio_client import handle_file

from conftest import REPO_ROOT, AppServer
from core import inference
from core.errors import WorkbenchError
from core.limits import MAX_PROMPT_CHARS, MAX_TEXT_CHARS, MAX_UPLOAD_BYTES
from core.models import ModelRegistry
from test_app_api import GENERATE_ARGS
from test_app_finetune import finetune_args, wait_for_state


def still_serving(client) -> None:
    assert client.predict(text="Still here.", model="tiny-bert-sentiment", api_name="/classify")


@pytest.mark.parametrize("api_name, kwargs, message", [
    ("/classify", dict(text="", model="tiny-bert-sentiment"), "empty"),
    ("/classify", dict(text=" \n\t ", model="tiny-bert-sentiment"), "empty"),
    ("/classify", dict(text="x" * (MAX_TEXT_CHARS + 1), model="tiny-bert-sentiment"), "too long"),
    ("/fill_mask", dict(text="  ", model="tiny-bert-mlm", top_k=5), "empty"),
    ("/fill_mask", dict(text="[MASK] " + "x" * MAX_TEXT_CHARS, model="tiny-bert-mlm", top_k=5),
     "too long"),
    ("/fill_mask", dict(text="The [MASK] house.", model="tiny-bert-mlm", top_k=50),
     r"Top-k must be at least 1 and at most 20 \(got 50"),
    ("/generate", dict(prompt="", **GENERATE_ARGS), "empty"),
    ("/generate", dict(prompt="x" * (MAX_PROMPT_CHARS + 1), **GENERATE_ARGS), "too long"),
    ("/generate", dict(prompt="Hi", **{**GENERATE_ARGS, "temperature": -1}),
     r"Temperature must be at least 0 and at most 2 \(got -1\)"),
    ("/generate", dict(prompt="Hi", **{**GENERATE_ARGS, "num_sequences": 99}),
     r"Number of sequences must be at least 1 and at most 4 \(got 99\)"),
])
def test_bad_text_and_settings_get_a_clear_message(client, api_name, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(**kwargs, api_name=api_name)
    still_serving(client)


def test_temperature_zero_is_greedy_not_an_error(client):
    args = {**GENERATE_ARGS, "temperature": 0, "max_new_tokens": 10}
    first, *_ = client.predict(prompt="the cat", **args, api_name="/generate")
    again, *_ = client.predict(prompt="the cat", **{**args, "seed": 99}, api_name="/generate")
    assert first == again and first.startswith("the cat")  # greedy: the seed does not matter


def test_control_characters_mixed_scripts_and_emoji_are_handled(client):
    odd = "Caf\u00e9 \u043c\u0438\u0440 \u4f60\u597d \U0001F600\x00\x07 \u202etext\u202c"
    scores = client.predict(text=odd, model="tiny-bert-sentiment", api_name="/classify")
    assert scores["label"] in {"negative", "positive"}
    bars, table, _ = client.predict(text=f"{odd} the [MASK] house", model="tiny-bert-mlm", top_k=3,
                                 api_name="/fill_mask")
    assert len(table["data"]) == 3
    text, *_ = client.predict(prompt=f"{odd} the cat", **{**GENERATE_ARGS, "max_new_tokens": 5},
                             api_name="/generate")
    assert text.startswith(odd)


def test_a_finetune_with_a_billion_epochs_is_refused(ft_client, tmp_path):
    data = tmp_path / "w.csv"
    data.write_text("text,label\na,x\nb,y\n" * 10)
    with pytest.raises(Exception, match=r"epochs must be above 0 and at most 20 \(got 1000000000\)"):
        ft_client.predict(**finetune_args(data, "never", epochs=10**9), api_name="/finetune")


def score_file(client, path):
    """(summary, scored rows, scored CSV) of a file scored without a gold label column."""
    return client.predict(file=handle_file(str(path)), text_column="text", model="tiny-bert-sentiment",
                          api_name="/classify_batch")[:3]


def zip_bomb() -> bytes:
    """50 MB of zeros in a 50 KB ZIP archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.txt", b"0" * 50_000_000)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, message", [
    ("header-only.csv", b"text,label\n", "no rows with text"),
    ("empty.csv", b"", "empty"),
    ("binary.csv", bytes(range(256)) * 8, "binary, not text"),
    ("bomb.txt", zip_bomb(), "binary, not text"),
    ("huge.csv", b"text\n" + (b"y" * 99 + b"\n") * (MAX_UPLOAD_BYTES // 100 + 10), "too large"),
])
def test_bad_files_get_a_clear_message(client, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(Exception, match=message):
        score_file(client, path)
    still_serving(client)


def test_awkward_but_valid_csv_files_are_read(client, tmp_path):
    cases = {
        "quoted.csv": ('text,id\n"line one\nline two",1\nplain,2\n'.encode(), ["line one\nline two", "plain"]),
        "bom.csv": (b"\xef\xbb\xbftext\nhello there\n", ["hello there"]),
        "latin1.csv": ("text\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"), ["caf\u00e9 cr\u00e8me"]),
        # Short rows are padded, extra cells beyond the header ignored: the rows stay in place.
        "ragged.csv": (b"text,id\nhello there,1\nonly text\nthree,cells,here\n", ["hello there", "only text",
                                                                                  "three"]),
    }
    for name, (content, texts) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        _, table, _ = score_file(client, path)
        assert [row[2] for row in table["data"]] == texts, name


def test_the_scored_csv_neutralises_formulas_and_keeps_markup_as_text(client, tmp_path):
    path = tmp_path / "evil name; rm -rf.csv"  # the upload's name is never used as a path
    path.write_text('text\n<script>alert(1)</script>\n"=cmd|\' /C calc\'!A0"\n@SUM(1+1)\n+1-2\n-3.5\n',
                    encoding="utf-8")
    _, table, scored = score_file(client, path)
    assert [row[2] for row in table["data"]][:2] == ["<script>alert(1)</script>", "=cmd|' /C calc'!A0"]
    assert scored.endswith("scored.csv")
    with open(scored, newline="", encoding="utf-8") as handle:
        cells = [row["text"] for row in csv.DictReader(handle)]
    assert cells == ["<script>alert(1)</script>", "'=cmd|' /C calc'!A0", "'@SUM(1+1)", "'+1-2", "-3.5"]


def test_a_model_that_fails_inside_fails_that_request_only(models_dir, tmp_path):
    """A classifier whose embedding table is smaller than its tokenizer's vocabulary loads
    fine and then raises inside the forward pass."""
    import transformers

    own = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", own / "tiny-bert-sentiment")
    config = transformers.AutoConfig.from_pretrained(models_dir / "tiny-bert-sentiment")
    config.vocab_size = 5
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(own / "broken-inside")
    transformers.AutoTokenizer.from_pretrained(models_dir / "tiny-bert-sentiment").save_pretrained(
        own / "broken-inside")
    registry = ModelRegistry(own)
    with pytest.raises(WorkbenchError, match="'broken-inside' failed on this input: IndexError"):
        inference.classify(registry, "broken-inside", "the house is red")
    assert inference.classify(registry, "tiny-bert-sentiment", "the house is red")


def test_files_outside_the_app_are_not_served(app_server):
    for path in ("/etc/passwd", str(REPO_ROOT / "app.py"), str(app_server.models_dir / "tiny-gpt2" / "config.json")):
        for prefix in ("gradio_api/file=", "file="):
            try:
                with urllib.request.urlopen(app_server.url + prefix + path, timeout=10) as response:
                    body = response.read()
            except urllib.error.HTTPError as error:
                assert error.code in (403, 404), (prefix, path, error.code)
                continue
            assert b"root:" not in body and b"import" not in body and b"architectures" not in body


def test_a_training_process_killed_while_saving_lists_no_broken_model_and_the_run_resumes(models_dir, tmp_path):
    """A fault injected at a known point (tests/faults): the training process dies after writing
    the weights into its hidden folder, before renaming it into place."""
    from gradio_client import Client

    from conftest import separable_csv
    from test_core_jobs import FAULTS

    own = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert-sentiment", own / "tiny-bert-sentiment")
    data = separable_csv(tmp_path / "w.csv", rows_per_class=20)
    faulty = {"PYTHONPATH": str(FAULTS), "WORKBENCH_TEST_FAULT": "killed-while-saving"}
    server = AppServer(["--models-dir", str(own)], env=faulty, log_path=tmp_path / "first.log").wait_until_serving()
    try:
        client = Client(server.url, verbose=False)
        client.predict(**finetune_args(data, "cut", epochs=2, checkpoint_every=2), api_name="/finetune")
        failed = wait_for_state(client, "failed", "finished", timeout=300)
        assert "The training process was killed by SIGKILL" in failed["message"], failed
        assert "no half-written model is left" in failed["message"] and "It can resume" in failed["message"]
        assert list(own.glob(".cut.saving-*")) and "cut" not in ModelRegistry(own).local_models()
        assert client.predict(text="still serving", model="tiny-bert-sentiment", api_name="/classify")
    finally:
        server.stop()

    # Restarted without the fault (forked from the worker's preloaded app, as other tests' servers).
    server = AppServer(["--models-dir", str(own)], log_path=tmp_path / "second.log").wait_until_serving()
    try:
        assert not list(own.glob(".*.saving-*"))  # the leftover was cleaned at start
        client = Client(server.url, verbose=False)
        client.predict(run_name="cut", api_name="/finetune_resume")
        assert "saved as 'cut' (resumed from step" in wait_for_state(client, "finished", "failed")["message"]
        assert (own / "cut" / "model.safetensors").is_file()
    finally:
        server.stop()


def test_the_readme_limits_table_matches_the_constants():
    import re

    from core import limits

    constants = {name: value for name, value in vars(limits).items() if name.isupper()}
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", text, re.M))
    assert set(rows) == set(constants), "every limit in core/limits.py has a README row, and no other"
    for name, shown in rows.items():
        number, _, unit = shown.strip().partition(" ")
        expected = float(number) * {"": 1, "MiB": 1024 * 1024}[unit]
        assert expected == constants[name], f"{name}: README says {shown.strip()}, code has {constants[name]}"
