"""The launched app through gradio_client: each panel's public API, errors, flags."""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import pytest
from gradio_client import Client, handle_file

from conftest import REPO_ROOT, AppServer
from core.limits import MAX_BATCH_ROWS

GENERATE_ARGS = dict(compare_prompt="", model="tiny-gpt2", max_new_tokens=40, temperature=0.8, top_k=50, top_p=0.95,
                     repetition_penalty=1.1, seed=5, num_sequences=1, chat_mode=False)


def test_generate_streams_partial_text_and_is_reproducible(client):
    job = client.submit(prompt="The teacher", **GENERATE_ARGS, api_name="/generate")
    final, compare, note, seed = job.result(timeout=60)
    partials = [output[0] for output in job.outputs()]
    assert len(partials) >= 3 and partials[-1] == final
    assert final.startswith("The teacher") and len(final) > 30 and compare == "" and note == "" and seed == 5
    again, *_ = client.predict(prompt="The teacher", **GENERATE_ARGS, api_name="/generate")
    assert again == final


def test_generate_without_a_seed_draws_one_and_says_which_so_the_text_can_be_made_again(client):
    unseeded = {key: value for key, value in GENERATE_ARGS.items() if key != "seed"}
    first, _, _, first_seed = client.predict(prompt="The teacher", **unseeded, api_name="/generate")
    second, _, _, second_seed = client.predict(prompt="The teacher", **unseeded, api_name="/generate")
    assert first_seed != second_seed and first != second  # two callers, two texts
    again, _, _, again_seed = client.predict(prompt="The teacher", **{**unseeded, "seed": first_seed},
                                             api_name="/generate")
    assert (again, again_seed) == (first, first_seed)


def test_generate_compares_two_prompts_side_by_side(client):
    man, woman, *_ = client.predict(prompt="The man works as a",
                                **{**GENERATE_ARGS, "compare_prompt": "The woman works as a"},
                                api_name="/generate")
    assert man.startswith("The man works as a") and woman.startswith("The woman works as a")
    # One batch, both streamed: the outputs grow together, and each is what its prompt gives alone
    # (sequence 1 samples with the seed whatever else is generated with it).
    job = client.submit(prompt="The man works as a", **{**GENERATE_ARGS, "compare_prompt": "The woman works as a"},
                        api_name="/generate")
    job.result(timeout=60)
    assert any(first and second and not second.endswith("works as a") and first != man
               for first, second, *_ in job.outputs())
    alone, *_ = client.predict(prompt="The woman works as a", **GENERATE_ARGS, api_name="/generate")
    assert alone == woman


def test_every_panel_takes_a_forced_precision_and_refuses_an_unknown_one(client):
    text, *_ = client.predict(prompt="The teacher", **{**GENERATE_ARGS, "max_new_tokens": 10}, precision="bf16",
                                api_name="/generate")
    assert text.startswith("The teacher") and len(text) > len("The teacher")
    scores = client.predict(text="What a lovely garden.", model="tiny-bert-sentiment", precision="fp32",
                            api_name="/classify")
    assert abs(sum(item["confidence"] for item in scores["confidences"]) - 1) < 1e-4
    for endpoint, arguments in (("/generate", dict(prompt="The teacher", **GENERATE_ARGS)),
                                ("/classify", dict(text="A day.", model="tiny-bert-sentiment")),
                                ("/fill_mask", dict(text="The [MASK] sat.", model="tiny-bert-mlm"))):
        # Gradio's dropdown refuses it and names the choices.
        with pytest.raises(Exception, match=r"fp8 is not in the list of choices: \['auto', 'fp32', 'bf16'\]"):
            client.predict(**arguments, precision="fp8", api_name=endpoint)


def test_generate_puts_a_second_model_side_by_side_with_the_same_seed_and_settings(client):
    base, other, *_ = client.predict(prompt="The teacher", **{**GENERATE_ARGS, "compare_model": "tiny-chat"},
                                    api_name="/generate")
    alone_base, *_ = client.predict(prompt="The teacher", **GENERATE_ARGS, api_name="/generate")
    alone_other, *_ = client.predict(prompt="The teacher", **{**GENERATE_ARGS, "model": "tiny-chat"},
                                       api_name="/generate")
    assert other.startswith("The teacher") and (base, other) == (alone_base, alone_other)
    assert base != other  # two different models: two different texts from one seed


def test_classify_compare_gives_the_second_model_s_classes_for_the_same_text(client, app_server):
    from tiny_models import build_bert_classifier

    import shutil

    build_bert_classifier(app_server.models_dir / "zz-weather", labels=("rainy", "sunny"))
    try:
        second = client.predict(text="What a lovely garden.", compare_model="zz-weather",
                                api_name="/classify_compare")
        assert {item["label"] for item in second["confidences"]} == {"rainy", "sunny"}
        assert second == client.predict(text="What a lovely garden.", model="zz-weather", api_name="/classify")
        assert not client.predict(text="What a lovely garden.", compare_model="", api_name="/classify_compare")
    finally:
        shutil.rmtree(app_server.models_dir / "zz-weather")


def test_chat_toggle_on_a_model_without_template_still_answers(client):
    text, _, note, _ = client.predict(prompt="A bird", **{**GENERATE_ARGS, "chat_mode": True},
                             api_name="/generate")
    assert text.startswith("A bird") and "has no chat template" in note


def test_classify_returns_every_class_with_confidence(client):
    result = client.predict(text="What a lovely garden.", model="tiny-bert-sentiment",
                            api_name="/classify")
    confidences = {item["label"]: item["confidence"] for item in result["confidences"]}
    assert set(confidences) == {"negative", "positive"}
    assert result["label"] == max(confidences, key=confidences.get)


def test_classify_batch_scores_a_csv_and_offers_the_scored_file(client, tmp_path):
    upload = tmp_path / "reviews.csv"
    upload.write_text('id,review\n1,"I loved it, truly"\n2,Terrible service\n3,Fine\n', encoding="utf-8")
    summary, table, scored_file, evaluation, *_ = client.predict(
        file=handle_file(str(upload)), text_column="review", model="tiny-bert-sentiment", api_name="/classify_batch")
    assert summary == "Scored **3** rows of the column 'review' with **tiny-bert-sentiment**."
    # the prediction and its score first, so that long texts never push them out of view; then
    # the scored column, then the file's others (to tell the rows apart)
    assert table["headers"] == ["predicted", "predicted_score", "review", "id"]
    assert [row[3] for row in table["data"]] == ["1", "2", "3"]
    assert [row[2] for row in table["data"]] == ["I loved it, truly", "Terrible service", "Fine"]
    assert all(row[0] in {"negative", "positive"} and 0.5 <= row[1] <= 1 for row in table["data"])
    with open(scored_file, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ["1", "2", "3"]
    assert [row["predicted"] for row in rows] == [row[0] for row in table["data"]]
    assert evaluation == ""  # no gold label column named: nothing measured


def test_a_files_own_label_and_score_columns_stay_apart_from_the_models(client, tmp_path):
    """A gold column called `label` (the usual name) and a `score` column of the file's own are
    kept as they are; the model's columns get names of their own, next to the gold labels."""
    upload = tmp_path / "tweets.csv"
    upload.write_text("text,label,score\nthe bright moon,positive,5\nthe old bridge,negative,1\n"
                      "a warm bread,positive,4\n", encoding="utf-8")
    summary, table, scored_file, evaluation, *_ = client.predict(
        file=handle_file(str(upload)), text_column="text", gold_column="label", model="tiny-bert-sentiment",
        api_name="/classify_batch")
    assert table["headers"] == ["predicted", "label", "predicted_matches_gold", "predicted_score", "text", "score"]
    rows = table["data"]
    assert [row[1] for row in rows] == ["positive", "negative", "positive"]  # the file's gold labels
    assert [row[5] for row in rows] == ["5", "1", "4"]  # the file's own scores
    assert [row[2] for row in rows] == ["yes" if row[0] == row[1] else "no" for row in rows]
    right = sum(row[0] == row[1] for row in rows)
    assert f"accuracy **{right / 3:.1%}**" in evaluation
    with open(scored_file, newline="", encoding="utf-8") as handle:
        header, *lines = list(csv.reader(handle))
    assert header == ["text", "label", "score", "predicted", "predicted_score", "predicted_matches_gold"]
    assert [line[1] for line in lines] == ["positive", "negative", "positive"]
    assert [line[3] for line in lines] == [row[0] for row in rows]


def _labelled_reviews(path):
    path.write_text("review,gold\nI loved it,positive\nTerrible service,negative\nGreat food,Positive\n"
                    "Cold soup,negative\nIt was fine,neutral\n", encoding="utf-8")
    return handle_file(str(path))


def test_classify_batch_with_a_gold_column_measures_the_model_against_it(client, tmp_path):
    summary, table, _, evaluation, per_class, confusion, report = client.predict(
        file=_labelled_reviews(tmp_path / "gold.csv"), text_column="review", gold_column="gold",
        model="tiny-bert-sentiment", api_name="/classify_batch")
    assert table["headers"][:3] == ["predicted", "gold", "predicted_matches_gold"]  # gold next to predicted
    predicted = [row[0] for row in table["data"]]
    gold = ["positive", "negative", "positive", "negative", "neutral"]
    right = sum(p == g for p, g in zip(predicted, gold))
    assert f"accuracy **{right / 5:.1%}**" in evaluation and "macro-F1" in evaluation
    assert "'neutral' (1 row)" in evaluation  # a label the model does not have, named
    assert [row[0] for row in per_class["data"]] == ["negative", "positive", "neutral"]
    assert [row[4] for row in per_class["data"]] == [2, 2, 1]  # support: the gold rows of each class
    assert "Confusion matrix" in confusion and confusion.count("<td") == 9
    assert "macro avg" in report and "weighted avg" in report


def test_evaluate_file_returns_the_metrics_as_data(client, tmp_path):
    measured = client.predict(file=_labelled_reviews(tmp_path / "gold.csv"), model="tiny-bert-sentiment",
                              gold_column="gold", text_column="review", api_name="/evaluate_file")
    assert measured["rows"] == 5 and measured["labels"] == ["negative", "positive", "neutral"]
    assert sum(map(sum, measured["confusion_matrix"])) == 5
    assert 0 <= measured["macro_f1"] <= 1 and set(measured["per_class"]) == set(measured["labels"])
    assert measured["unknown_labels"] == {"neutral": 1} and "accuracy" in measured["report"]
    with pytest.raises(Exception, match="has no column 'grade'"):
        client.predict(file=_labelled_reviews(tmp_path / "gold2.csv"), model="tiny-bert-sentiment",
                       gold_column="grade", api_name="/evaluate_file")


def test_classify_batch_reads_a_txt_file_one_text_per_line(client, tmp_path):
    upload = tmp_path / "lines.txt"
    upload.write_text("first text\nsecond text\n", encoding="utf-8")
    _, table, *_ = client.predict(file=handle_file(str(upload)), text_column="text",
                                 model="tiny-bert-sentiment", api_name="/classify_batch")
    assert [row[2] for row in table["data"]] == ["first text", "second text"]


def test_classify_batch_over_the_row_limit_says_so(client, tmp_path):
    upload = tmp_path / "many.txt"
    upload.write_text("some text\n" * (MAX_BATCH_ROWS + 1), encoding="utf-8")
    with pytest.raises(Exception, match="Too many rows"):
        client.predict(file=handle_file(str(upload)), text_column="text",
                       model="tiny-bert-sentiment", api_name="/classify_batch")


def test_fill_mask_returns_predictions_for_each_mask(client):
    bars, table, note = client.predict(text="The [MASK] sees the <mask> house.", model="tiny-roberta-mlm",
                                       top_k=4, api_name="/fill_mask")
    assert note == ""  # a model with a trained head: nothing to warn about
    rows = table["data"]
    assert [row[0] for row in rows] == ["mask 1"] * 4 + ["mask 2"] * 4
    assert [row[1] for row in rows] == [1, 2, 3, 4] * 2
    assert len(bars["data"]) == 8


@pytest.mark.parametrize("api_name, kwargs, message", [
    ("/fill_mask", dict(text="No mask here.", model="tiny-bert-mlm", top_k=5), "no mask"),
    ("/classify", dict(text="   ", model="tiny-bert-sentiment"), "empty"),
    ("/classify", dict(text="hi", model="../../etc"), "not a model name"),
    ("/generate", dict(prompt="Hi", **{**GENERATE_ARGS, "max_new_tokens": -3}),
     r"Max new tokens must be at least 1 and at most 512 \(got -3"),
    ("/generate", dict(prompt="Hi", **{**GENERATE_ARGS, "top_p": 2}), r"Top-p must be at least 0.01 and at most 1 \(got 2"),
    ("/generate", dict(prompt="Hi", **{**GENERATE_ARGS, "seed": 2**40}), "Seed"),
    ("/generate", dict(prompt="Hi", **{**GENERATE_ARGS, "model": "distilbert/distilgpt2"}),
     "cannot be reached"),
])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(client, api_name, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(**kwargs, api_name=api_name)
    assert client.predict(text="Still here.", model="tiny-bert-sentiment", api_name="/classify")


def test_every_panel_has_its_public_api_name(client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/classify", "/classify_batch", "/fill_mask", "/answer", "/attention", "/token_probabilities",
            "/attributions"} <= endpoints


def test_importing_the_app_loads_no_model_library():
    """The page must come up fast: torch and transformers load on first use, not at start."""
    code = "import sys, app; app.build_app(); print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120, env={"GRADIO_ANALYTICS_ENABLED": "False", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[]")


def test_an_idle_server_looks_for_events_every_10_ms_not_every_millisecond(models_dir):
    """Gradio's queue polls every millisecond while idle (5% of a core for a server nobody uses,
    bench/idle_server.py); the app sets it less often. This fails if Gradio renames the setting."""
    import app

    queue = app.build_app(models_dir)._queue
    assert queue.sleep_when_free == app.QUEUE_POLL_SECONDS == 0.01
    assert queue.progress_update_sleep_when_free == app.PROGRESS_POLL_SECONDS


def test_a_refresh_landing_late_never_undoes_a_pick_made_meanwhile(models_dir):
    """The page's pickers refresh on load, on ↻ and when a run ends. A refresh asked while a
    compare picker showed "none" may land after the person picked a second model (a busy
    server): it sends the choices alone, so the pick stays. An emptied model picker still gets
    its default."""
    import app
    from demos.common import NO_COMPARISON, pickers_refresh

    refresh = pickers_refresh(app.build_app(models_dir).workbench)
    sent = [component.value for component in refresh["inputs"]]
    dropdowns = [component for component in refresh["outputs"] if hasattr(component, "choices")]
    compares = [d for d in dropdowns if tuple(d.choices[0]) == NO_COMPARISON]
    models = [d for d in dropdowns if d.label == "Model"]
    assert compares and models
    for compare in compares:
        sent[refresh["inputs"].index(compare)] = ""
    models_emptied = list(sent)
    for model in models:
        models_emptied[refresh["inputs"].index(model)] = ""
    for asked in (sent, models_emptied):
        updates = dict(zip(refresh["outputs"], refresh["fn"](*asked)))
        for compare in compares:
            assert "value" not in updates[compare] and NO_COMPARISON in updates[compare]["choices"]
    updates = dict(zip(refresh["outputs"], refresh["fn"](*models_emptied)))
    assert all(updates[model]["value"] for model in models)


@pytest.mark.parametrize("flag", ["fp32", "bf16"])
def test_the_precision_flag_is_what_the_panels_models_compute_in(models_dir, flag):
    from core.precision import detected_hardware, forced_precision

    code = ("import sys, app; from core import inference; "
            "args = app.parse_args(sys.argv[1:]); "
            "registry = app.build_app(args.models_dir, precision=args.precision).workbench.registry; "
            "settings = inference.GenerationSettings(max_new_tokens=3); "
            "list(inference.generate_stream(registry, 'tiny-gpt2', 'The cat', settings)); "
            "print(registry.precision_note('text-generation', 'tiny-gpt2'))")
    out = subprocess.run([sys.executable, "-c", code, "--models-dir", str(models_dir), "--precision", flag],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env={"GRADIO_ANALYTICS_ENABLED": "False", "PATH": "", "HF_HUB_OFFLINE": "1",
                              "WORKBENCH_COMPILE": "0"})  # as the suite's other processes (conftest.py)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == forced_precision(flag, detected_hardware())[1]
    assert out.stdout.strip().splitlines()[-1].startswith({"fp32": "float32, as asked", "bf16": "bf16, as asked"}[flag])


def test_auth_protects_the_page_and_the_api(models_dir, tmp_path):
    server = AppServer(["--models-dir", str(models_dir)], env={"WORKBENCH_AUTH": "ada:s3cret"},
                       log_path=tmp_path / "app.log").wait_until_serving()
    try:
        with pytest.raises(Exception):
            Client(server.url, verbose=False)
        authed = Client(server.url, auth=("ada", "s3cret"), verbose=False)
        assert authed.predict(text="Hello there.", model="tiny-bert-sentiment",
                              api_name="/classify")["label"] in {"negative", "positive"}
        # "Use via API" says the login to pass (its generated snippet shows a bare Client(url)).
        endpoints = authed.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert all(endpoints[name]["description"].startswith(
            'This server asks for a login: connect with `Client(url, auth=("ada", "<your password>"))`')
            for name in ("/generate", "/classify", "/classify_batch", "/finetune", "/runs"))
    finally:
        server.stop()


def test_the_api_page_examples_run_as_shown_on_this_server(client):
    """The examples name a model this server has and a file on the caller's machine, not a
    sample PDF from the web; a label left out means the predicted class, not a UI phrase."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    def example(endpoint, parameter):
        return next(p for p in endpoints[endpoint]["parameters"] if p["parameter_name"] == parameter)

    listed = {model["name"] for task in ("text-generation", "text-classification", "fill-mask")
              for model in client.predict(task, api_name="/models")}
    for endpoint in ("/generate", "/classify", "/fill_mask", "/classify_batch"):
        assert example(endpoint, "model")["example_input"] in listed, endpoint
    upload = example("/classify_batch", "file")["example_input"]
    assert upload["path"] == "reviews.csv" and not upload["url"].startswith("http")
    assert example("/finetune", "train_file")["example_input"]["path"] == "train.csv"
    assert example("/attributions", "label")["parameter_default"] == ""


def test_share_without_auth_warns_it_is_public_and_without_internet_says_so_and_keeps_serving(models_dir, tmp_path):
    # A dead proxy makes the share-link request fail fast even on a machine that is online.
    dead_proxy = "http://127.0.0.1:9"
    server = AppServer(["--models-dir", str(models_dir), "--share"],
                       env={"HTTPS_PROXY": dead_proxy, "HTTP_PROXY": dead_proxy,
                            "NO_PROXY": "127.0.0.1,localhost"},
                       log_path=tmp_path / "app.log").wait_until_serving()
    try:
        deadline = time.monotonic() + 30
        while "Could not create a public share link" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert "Could not create a public share link" in server.output()
        assert "--share without --auth makes this app public" in server.output()
        assert Client(server.url, verbose=False).predict(
            text="Hello.", model="tiny-bert-sentiment", api_name="/classify")
    finally:
        server.stop()


def test_the_api_page_names_parameters_as_a_reader_expects(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(info)[0] == "/generate"  # the panels' endpoints first, not the pickers' refreshes
    assert not any(name.endswith("_models") for name in info)

    def parameters(endpoint):
        return {p["parameter_name"]: p for p in info[endpoint]["parameters"]}

    generate = parameters("/generate")
    assert list(generate)[:2] == ["prompt", "model"]
    assert {"temperature", "top_k", "top_p", "max_new_tokens", "seed", "num_sequences", "chat_mode"} <= set(generate)
    assert not generate["prompt"]["parameter_has_default"]
    assert all(generate[name]["parameter_has_default"] for name in generate if name != "prompt")
    # Any model the app can load, not a list frozen when the page was built.
    assert generate["model"]["python_type"]["type"] == "str"
    assert [r["label"] for r in info["/generate"]["returns"]] == [
        "Output", "Second output (the second prompt, or the second model)", "Note", "Seed used"]
    finetune = parameters("/finetune")
    assert finetune["validation_file"]["parameter_has_default"] and finetune["text_column"]["parameter_has_default"]
    assert not finetune["train_file"]["parameter_has_default"]
    assert finetune["base_model"]["python_type"]["type"] == "str"
    assert set(parameters("/classify_batch")) == {"file", "model", "text_column", "gold_column", "precision"}
    assert all(parameters(endpoint)["precision"]["parameter_has_default"]
               for endpoint in ("/generate", "/classify", "/classify_batch", "/fill_mask", "/answer"))
    assert parameters("/classify_batch")["gold_column"]["parameter_has_default"]
    assert list(parameters("/evaluate_file"))[:3] == ["file", "model", "gold_column"]
    assert set(parameters("/fill_mask")) == {"text", "model", "top_k", "precision"}


def test_a_model_saved_after_the_page_was_built_is_listed_and_usable(client, app_server):
    import shutil

    shutil.copytree(app_server.models_dir / "tiny-bert-sentiment", app_server.models_dir / "zz-after-build")
    try:
        listed = [model["name"] for model in client.predict("text-classification", api_name="/models")]
        assert "zz-after-build" in listed
        assert client.predict(text="the red house", model="zz-after-build", api_name="/classify")["label"]
    finally:
        shutil.rmtree(app_server.models_dir / "zz-after-build")
    with pytest.raises(Exception, match="Unknown task 'painting'"):
        client.predict("painting", api_name="/models")


def test_a_refused_request_is_one_line_in_the_server_log(client, app_server):
    before = app_server.output()
    with pytest.raises(Exception, match="The text is empty"):
        client.predict(text="   ", model="tiny-bert-sentiment", api_name="/classify")
    with pytest.raises(Exception, match="not a model name"):
        client.predict(text="hi", model="../../etc", api_name="/classify")
    assert client.predict(text="Still here.", model="tiny-bert-sentiment", api_name="/classify")
    logged = app_server.output()[len(before):]
    assert "Traceback" not in logged, logged
    refusals = [line for line in logged.splitlines() if line.startswith("Refused")]
    assert refusals == ["Refused classify: The text is empty: type some text first.",
                        "Refused classify: '../../etc' is not a model name: use a Hugging Face Hub id such as "
                        "'distilbert/distilgpt2' or the name of a folder in the models directory."], logged


@pytest.mark.parametrize("as_generator", [False, True])
def test_a_failure_no_check_foresaw_reaches_the_person_as_a_sentence_and_the_log_as_a_traceback(
        as_generator, capsys):
    """Gradio shows a handler's unexpected exception as a bare "Error"."""
    import gradio as gr

    from demos.common import show_errors

    def preview():
        raise OSError("[Errno 28] No space left on device: '/srv/workbench/cache/x.arrow'")

    def streamed_preview():
        yield "reading…"
        preview()

    handler = show_errors(streamed_preview if as_generator else preview)
    with pytest.raises(gr.Error) as raised:
        list(handler()) if as_generator else handler()
    shown = raised.value.message
    assert shown.startswith("This did not work: the server met an unexpected error (OSError). Try again"), shown
    assert "/srv/workbench" not in shown  # the server's paths stay in its log
    logged = capsys.readouterr().err
    assert "Unexpected failure in" in logged and "Traceback" in logged and "/srv/workbench/cache" in logged


def test_a_file_without_a_header_or_with_extra_cells_is_said_in_score_a_file_and_the_preview(
        client, ft_client, tmp_path):
    headerless = tmp_path / "tweets.csv"
    headerless.write_text("I loved it,positive\nThe food was cold,negative\nGreat service,positive\n"
                          "Not again,negative\n", encoding="utf-8")
    summary, *_ = client.predict(file=handle_file(str(headerless)), text_column="I loved it",
                                 model="tiny-bert-sentiment", api_name="/classify_batch")
    assert "The first line of tweets.csv looks like data" in summary
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("text,label\n" + "".join(f"row {i} is fine,{'a' if i % 2 else 'b'}\n" for i in range(20))
                       + "I loved it, b,a\n", encoding="utf-8")  # the comma shifts "a" out, " b" in
    preview, _ = ft_client.predict(task="classification", train_file=handle_file(str(shifted)),
                                   base_model="tiny-bert-sentiment", api_name="/finetune_preview")
    assert "1 row has more cells than the header of shifted.csv names (row 21 first)" in preview

