"""One server, several people at once (through gradio_client, a client per person): a second
person's generation joins the running batch instead of waiting for the first to end, gets the
text it gets alone, one person cannot run two at once, and a full batch says the place."""

from __future__ import annotations

import re

import pytest
from gradio_client import Client

from conftest import SMOLLM2, AppServer

# A generation that runs until it is cancelled: 512 sampled tokens in 2 rows of the real model.
LONG = dict(compare_prompt="", model=SMOLLM2, max_new_tokens=512, temperature=1.0, top_k=50, top_p=0.95,
            repetition_penalty=1.1, seed=1, num_sequences=2, chat_mode=False, precision="fp32")
SHORT = dict(compare_prompt="", model=SMOLLM2, max_new_tokens=12, temperature=0, top_k=50, top_p=0.95,
             repetition_penalty=1.1, seed=1, num_sequences=1, chat_mode=False, precision="fp32")


def person(server) -> Client:
    return Client(server.url, verbose=False)


def under_way(job):
    """Wait for a generation's first streamed output: it is then a row of the running batch."""
    return next(iter(job))


@pytest.fixture(scope="module")
def small_batch_server(models_dir, smollm2_folder, tmp_path_factory):
    """A server whose batches take two rows, so that one long generation fills them."""
    server = AppServer(["--models-dir", str(models_dir), "--batch-rows", "2"],
                       log_path=tmp_path_factory.mktemp("logs") / "small-batch.log").wait_until_serving()
    yield server
    server.stop()


@pytest.mark.real  # the packaged SmolLM2
def test_a_second_person_is_served_during_a_long_generation_with_the_text_they_get_alone(app_server):
    first, second = person(app_server), person(app_server)
    long = first.submit(prompt="Chapter one. The storm", **LONG, api_name="/generate")
    try:
        under_way(long)
        together, _, note, _ = second.predict(prompt="The capital of France is", **SHORT, api_name="/generate")
        assert not long.done()  # served beside it, not after it
    finally:
        long.cancel()
    alone, *_ = second.predict(prompt="The capital of France is", **SHORT, api_name="/generate")
    assert together == alone and len(together) > len("The capital of France is") and note == ""


@pytest.mark.real  # the packaged SmolLM2
def test_one_person_cannot_run_two_generations_at_once(app_server):
    someone = person(app_server)
    long = someone.submit(prompt="Chapter one. The storm", **LONG, api_name="/generate")
    try:
        under_way(long)
        with pytest.raises(Exception, match="running already"):
            someone.predict(prompt="The capital of France is", **SHORT, api_name="/generate")
        # Someone else is not held up by it.
        text, *_ = person(app_server).predict(prompt="The capital of France is", **SHORT, api_name="/generate")
        assert text.startswith("The capital of France is")
    finally:
        long.cancel()


@pytest.mark.real  # the packaged SmolLM2
def test_a_full_batch_tells_the_next_person_their_place_and_serves_them_when_a_row_frees(small_batch_server):
    first, second = person(small_batch_server), person(small_batch_server)
    long = first.submit(prompt="Chapter one. The storm", **LONG, api_name="/generate")  # both rows
    try:
        under_way(long)
        queued = second.submit(prompt="The capital of France is", **SHORT, api_name="/generate")
        text, _, note, _ = under_way(queued)
        assert text == "" and "You are next" in note and "about" in note
    finally:
        long.cancel()
    final, _, note, _ = queued.result(timeout=120)
    assert final.startswith("The capital of France is") and len(final) > len("The capital of France is")
    assert "Waiting" not in note


@pytest.fixture(scope="module")
def shared_server(models_dir, tmp_path_factory):
    """A server that counts as shared (as with --share, on a Space, or another --host)."""
    import shutil

    own = tmp_path_factory.mktemp("shared-models")
    shutil.copytree(models_dir / "tiny-bert-sentiment", own / "tiny-bert-sentiment")
    server = AppServer(["--models-dir", str(own), "--shared"],
                       log_path=tmp_path_factory.mktemp("logs") / "shared.log").wait_until_serving()
    server.models_dir = own
    yield server
    server.stop()


@pytest.mark.real  # the packaged MiniLM
def test_on_a_shared_server_a_second_run_waits_in_line_and_no_one_touches_anothers_run_or_model(
        shared_server, tmp_path):
    from conftest import separable_csv
    from core.history import OTHERS_DATA
    from test_app_finetune import finetune_args, wait_for_live_step, wait_for_state

    ann, bob = person(shared_server), person(shared_server)
    diary = separable_csv(tmp_path / "ann-diary.csv", rows_per_class=200)
    ann.predict(**finetune_args(diary, "anns-run", epochs=20, batch_size=2), api_name="/finetune")
    wait_for_live_step(ann, "anns-run")
    with pytest.raises(Exception, match="someone else's: only the person it belongs to, or the server's admin"):
        bob.predict(api_name="/finetune_cancel")
    # Ann's data warnings (they may quote her file) reach Ann; Bob learns only that there are some.
    assert ann.predict(api_name="/finetune_status")["warnings"]
    assert [warning.endswith("shown to the person who started it.")
            for warning in bob.predict(api_name="/finetune_status")["warnings"]] == [True]
    # Bob's run, the one that waits in line, is the real workflow: the packaged MiniLM, kept short.
    bobs_run = finetune_args(separable_csv(tmp_path / "bob.csv", rows_per_class=16), "bobs-model",
                             base_model="packaged:all-MiniLM-L6-v2", epochs=1, learning_rate=1e-4)
    queued = bob.predict(**bobs_run, api_name="/finetune")
    assert "your run is next" in queued and "you can leave this page and come back" in queued
    assert bob.predict(api_name="/finetune_status")["queued"]["model_name"] == "bobs-model"
    assert ann.predict(api_name="/finetune_status")["queued"] is None
    ann.predict(api_name="/finetune_cancel")
    wait_for_state(ann, "cancelled", timeout=60)
    with pytest.raises(Exception, match="someone else's"):
        bob.predict(api_name="/finetune_discard")
    ann.predict(api_name="/finetune_discard")  # the slot is free: Bob's run starts by itself
    done = wait_for_state(bob, "finished", "failed", timeout=300)
    assert (done["model_name"], done["state"]) == ("bobs-model", "finished"), done
    # Everyone may use everyone's models: Ann classifies with Bob's.
    scores = ann.predict(text="the cat sees sunshine and flowers", model="bobs-model", api_name="/classify")
    assert {item["label"] for item in scores["confidences"]} == {"sunny", "rainy"}
    for call in (dict(name="bobs-model", new_name="taken", api_name="/rename_model"),
                 dict(name="bobs-model", api_name="/delete_model"),
                 dict(model_name="bobs-model", api_name="/finetune_download")):
        with pytest.raises(Exception, match="The model 'bobs-model' is someone else's"):
            ann.predict(**call)
    assert (shared_server.models_dir / "bobs-model").is_dir()
    # A bare REST call, with no session, has no one's rights either.
    import json
    import urllib.error
    import urllib.request

    bare = urllib.request.Request(f"{shared_server.url}gradio_api/run/delete_model", method="POST",
                                  data=json.dumps({"data": ["bobs-model"]}).encode(),
                                  headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bare, timeout=60)
    assert "someone else's" in refused.value.read().decode()
    assert (shared_server.models_dir / "bobs-model").is_dir()
    # The history shows everyone's runs, other people's without their file's name.
    seen_by_bob = {run["model_name"]: run["data"] for run in bob.predict(api_name="/runs")}
    seen_by_ann = {run["model_name"]: run["data"] for run in ann.predict(api_name="/runs")}
    assert seen_by_bob["bobs-model"].startswith("bob.csv") and seen_by_bob["anns-run"] == OTHERS_DATA
    assert seen_by_ann["anns-run"].startswith("ann-diary.csv") and seen_by_ann["bobs-model"] == OTHERS_DATA
    assert bob.predict(name="bobs-model", new_name="bobs-weather", api_name="/rename_model") == \
        "Renamed 'bobs-model' to 'bobs-weather'."


# What a Space with `hf_oauth: true` sets; nothing here reaches Hugging Face (the sign-in itself is
# Hugging Face's: a test signs people in the way Gradio's callback does, in the signed session cookie).
SPACE_WITH_SIGN_IN = {"SYSTEM": "spaces", "SPACE_ID": "teacher/workbench", "SPACE_AUTHOR_NAME": "teacher", "OAUTH_CLIENT_ID": "workbench",
                      "OAUTH_CLIENT_SECRET": "space-secret", "OAUTH_SCOPES": "openid profile",
                      "OPENID_PROVIDER_URL": "http://127.0.0.1:9"}


def signed_in(server, username: str) -> Client:
    """A client (a browser, a device) signed in on the Space as `username`."""
    import base64
    import hashlib
    import json
    import time

    from itsdangerous import TimestampSigner

    secret = hashlib.sha256((SPACE_WITH_SIGN_IN["OAUTH_CLIENT_SECRET"] + "-v4").encode()).hexdigest()
    session = {"oauth_info": {"access_token": "token", "expires_at": int(time.time()) + 3600,
                              "userinfo": {"preferred_username": username, "name": username}}}
    cookie = TimestampSigner(secret).sign(base64.b64encode(json.dumps(session).encode())).decode()
    return Client(server.url, verbose=False, headers={"Cookie": f"session={cookie}"})


@pytest.fixture(scope="module")
def space_server(models_dir, tmp_path_factory):
    import shutil

    own = tmp_path_factory.mktemp("space-models")
    shutil.copytree(models_dir / "tiny-bert-sentiment", own / "tiny-bert-sentiment")
    server = AppServer(["--models-dir", str(own)], env=SPACE_WITH_SIGN_IN,
                       log_path=tmp_path_factory.mktemp("logs") / "space.log").wait_until_serving()
    yield server
    server.stop()


def test_on_a_space_a_run_belongs_to_the_hugging_face_login_on_every_device(space_server, tmp_path):
    from conftest import separable_csv
    from test_app_finetune import finetune_args, wait_for_live_step, wait_for_state

    anns_laptop, anns_phone = signed_in(space_server, "ann"), signed_in(space_server, "ann")
    bob, visitor, teacher = signed_in(space_server, "bob"), person(space_server), signed_in(space_server, "teacher")
    data = separable_csv(tmp_path / "ann.csv", rows_per_class=200)
    anns_laptop.predict(**finetune_args(data, "anns-run", epochs=20, batch_size=2), api_name="/finetune")
    wait_for_live_step(anns_laptop, "anns-run")
    for stranger in (bob, visitor):  # another login, or someone not signed in
        with pytest.raises(Exception, match="someone else's"):
            stranger.predict(api_name="/finetune_cancel")
    anns_phone.predict(api_name="/finetune_cancel")  # another session, the same person
    wait_for_state(anns_phone, "cancelled", timeout=60)
    with pytest.raises(Exception, match="someone else's"):
        bob.predict(api_name="/finetune_discard")
    teacher.predict(api_name="/finetune_discard")  # the Space's owner acts on everyone's runs
    assert wait_for_state(anns_laptop, "idle")["message"] == "Discarded the trained model."


@pytest.mark.real  # the packaged SmolLM2
def test_the_page_tells_a_queued_person_their_place_then_writes_their_text(small_batch_server, browser, tmp_path):
    from playwright.sync_api import expect

    from test_browser import open_tab

    filler = person(small_batch_server)
    long = filler.submit(prompt="Chapter one. The storm", **{**LONG, "precision": "auto"}, api_name="/generate")
    # A second long one waits for the batch: should the first write its end token early (sampled
    # text, machine-dependent precision), the batch is still taken when the page asks.
    under_way(long)
    behind = person(small_batch_server).submit(prompt="Chapter two. The flood", **{**LONG, "precision": "auto"},
                                               api_name="/generate")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(small_batch_server.url)
        open_tab(page, "Text generation")
        picker = page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)
        picker.fill("SmolLM2-135M-Instruct (offline)")
        picker.press("Enter")
        page.get_by_label("Prompt", exact=True).fill("Name three colours.")
        page.get_by_role("button", name="Generate", exact=True).click()
        note = page.locator("#generation-note")
        expect(note).to_contain_text(
            re.compile(r"Waiting for a place in the model's batch: (You are next|1 ahead of you), about \d+ s"))
        page.screenshot(path=str(tmp_path / "queued.png"), full_page=True)
    finally:
        long.cancel()
        behind.cancel()
    page.wait_for_function("() => document.querySelector('#generation-output textarea').value.length > 0")
    page.get_by_role("button", name="Generate", exact=True).wait_for()
    expect(note).not_to_contain_text("Waiting")
    context.close()


def fine_tune_page(browser, server):
    """A new person's browser (its own context) on the server's Fine-tune tab: (context, page)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.get_by_role("tab", name="Fine-tune").click()
    return context, page


def test_a_page_whose_run_waits_in_line_finds_its_place_again_after_a_reload(shared_server, browser, tmp_path):
    from playwright.sync_api import expect

    from conftest import separable_csv
    from test_app_finetune import finetune_args, wait_for_live_step, wait_for_state
    from test_browser import prepare_classification_run

    ann = person(shared_server)
    # Ann's cancelled run holds the server's one training slot until she saves or discards it:
    # Bob's run waits in line meanwhile, with no run taking the CPU his page needs (on a busy
    # machine a page beside a training run was slow to draw).
    ann.predict(**finetune_args(separable_csv(tmp_path / "ann.csv", rows_per_class=1000), "anns-held", epochs=20,
                                batch_size=2), api_name="/finetune")
    wait_for_live_step(ann, "anns-held")
    ann.predict(api_name="/finetune_cancel")
    wait_for_state(ann, "cancelled", timeout=60)
    context, page = fine_tune_page(browser, shared_server)
    try:
        prepare_classification_run(page, separable_csv(tmp_path / "bob.csv"), "bobs-browser")
        page.get_by_role("button", name="Start fine-tuning").click()
        status = page.locator("#finetune-status")
        expect(status).to_contain_text("Queued: your run is next (a trained 'anns-held' waits to be saved or discarded")
        page.reload()  # leave the page and come back: the same browser, its run still in line
        page.get_by_role("tab", name="Fine-tune").click()
        expect(status).to_contain_text("bobs-browser: Queued: your run is next")
        expect(page.get_by_role("button", name="Cancel")).to_be_enabled()  # takes it out of the line
        page.screenshot(path=str(tmp_path / "queued-run.png"), full_page=True)
    finally:
        ann.predict(api_name="/finetune_discard")
    expect(status).to_contain_text("saved as 'bobs-browser'", timeout=300_000)
    context.close()


def test_another_persons_run_ending_leaves_the_name_you_are_typing_alone(shared_server, browser, tmp_path):
    """A finished run's name is taken, so its owner's page proposes a free one; on someone else's
    page, what they typed stays."""
    from playwright.sync_api import expect

    from conftest import separable_csv
    from test_app_finetune import finetune_args, wait_for_state

    context, page = fine_tune_page(browser, shared_server)
    try:
        name = page.get_by_label("Name of the new model")
        name.fill("bobs-own-name")
        ann = person(shared_server)
        ann.predict(**finetune_args(separable_csv(tmp_path / "ann.csv"), "anns-quick", epochs=1),
                    api_name="/finetune")
        wait_for_state(ann, "finished")
        # Bob's page has seen the run end (as anyone's: its name, not its details)...
        expect(page.locator("#finetune-status")).to_contain_text("anns-quick", timeout=60_000)
        expect(page.locator("#finetune-status")).to_contain_text("finished")
        assert name.input_value() == "bobs-own-name"  # ...and kept his name
    finally:
        context.close()
