"""One server, several people at once (through gradio_client, a client per person): a second
person's generation joins the running batch instead of waiting for the first to end, gets the
text it gets alone, one person cannot run two at once, and a full batch says the place."""

from __future__ import annotations

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
