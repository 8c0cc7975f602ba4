"""Many people at once, on loopback with tiny models: no errors, no request starved by another
event, and a full queue says so at once."""

from __future__ import annotations

import re
import threading
import time

from gradio_client import Client

from conftest import AppServer
from test_app_api import GENERATE_ARGS

CLIENTS, REQUESTS_EACH = 20, 10


def test_twenty_clients_times_ten_requests_all_succeed(app_server):
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def person(number: int) -> None:
        client = Client(app_server.url, verbose=False)
        for request in range(REQUESTS_EACH):
            try:
                if request % 2:
                    text, *_ = client.predict(prompt=f"person {number} asks", **{**GENERATE_ARGS, "max_new_tokens": 8},
                                             api_name="/generate")
                    assert text.startswith(f"person {number} asks")
                else:
                    scores = client.predict(text=f"text {number}-{request}", model="tiny-bert-sentiment",
                                            api_name="/classify")
                    assert scores["label"] in {"negative", "positive"}
                with lock:
                    done[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                with lock:
                    errors.append(f"{number}/{request}: {type(error).__name__}: {error}")

    people = [threading.Thread(target=person, args=(number,)) for number in range(CLIENTS)]
    for thread in people:
        thread.start()
    for thread in people:
        thread.join()
    assert errors == []
    assert done[0] == CLIENTS * REQUESTS_EACH


def test_a_long_generation_does_not_block_classification(client):
    long_run = client.submit(prompt="the cat", **{**GENERATE_ARGS, "max_new_tokens": 512, "num_sequences": 4},
                             api_name="/generate")
    while not long_run.outputs():  # the generation is under way: its first text has arrived
        time.sleep(0.05)
    assert client.predict(text="Quick one.", model="tiny-bert-sentiment", api_name="/classify")
    # The order is what matters: the answer came while the generation was still writing.
    assert not long_run.done(), "the generation should still be running while classification answered"
    long_run.cancel()


def test_a_full_queue_answers_at_once_instead_of_waiting(models_dir, tmp_path):
    # One generation of 4 rows fills a batch of 4; two more may wait for a place.
    server = AppServer(["--models-dir", str(models_dir), "--queue-size", "2", "--batch-rows", "4"],
                       log_path=tmp_path / "app.log").wait_until_serving()
    try:
        slow = {**GENERATE_ARGS, "max_new_tokens": 512, "num_sequences": 4}
        people = [Client(server.url, verbose=False) for _ in range(6)]  # one generation each
        jobs = [person.submit(prompt="the cat", **slow, api_name="/generate") for person in people]
        refused = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not refused:
            for job in jobs:
                if job.done():
                    try:
                        job.result()
                    except Exception as error:  # noqa: BLE001
                        refused.append(str(error))
            time.sleep(0.1)
        assert refused, "with 1 running and 2 waiting, further requests must be refused"
        assert any(re.search("queue is full", message, re.I) for message in refused), refused
        for job in jobs:
            job.cancel()
    finally:
        server.stop()

