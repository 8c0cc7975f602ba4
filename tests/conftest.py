"""Shared fixtures: tiny offline models, the app served by `python app.py`, headless Chromium."""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# The Hub is unreachable inside the tests by construction, on any machine: its endpoint is a
# local port bound but never listening (connections are refused at once), and the Hugging Face
# cache is an empty folder of this session. Tests of the online path point HF_ENDPOINT at a
# fake Hub of their own (fake_hub_answering, silent_hub); offline mode is set where meant.
_DEAD_HUB = socket.socket()
_DEAD_HUB.bind(("127.0.0.1", 0))
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_DEAD_HUB.getsockname()[1]}"
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_SESSION_FOLDERS = {key: tempfile.mkdtemp(prefix=f"workbench-test-{kind}-")
                    for key, kind in (("HF_HOME", "hf-home"), ("TRACKIO_DIR", "trackio"))}  # runs logged to trackio
# Packaged models are converted into a cache of this test session, as on a fresh machine; the
# app servers the tests start inherit it. A worker of `pytest -n N` (scripts/test.sh) takes its
# controller's (workers inherit its environment), so SmolLM2 is converted once for all of them.
# The tiny models that take seconds to build are kept in a folder of the session too
# (tiny_models.py), for the workers and the bench scripts' --smoke runs.
if "PYTEST_XDIST_WORKER" in os.environ:
    assert os.environ.get("WORKBENCH_CACHE_DIR"), "a worker started without its controller's cache"
else:
    _SESSION_FOLDERS["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="workbench-test-cache-")
    _SESSION_FOLDERS["TINY_MODELS_CACHE"] = tempfile.mkdtemp(prefix="workbench-test-tiny-models-")
# Removed when the session ends: the converted SmolLM2 alone is some 270 MB a session.
atexit.register(lambda: [shutil.rmtree(folder, ignore_errors=True) for folder in _SESSION_FOLDERS.values()])
os.environ.update(_SESSION_FOLDERS)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)
# Compiling the bf16 decoding step is opt-in (core/compiled_step.py); off here even if the
# developer's shell turns it on, or each app server a test starts would compile again. The tests
# of the compiled step turn it on (test_core_compiled_step.py).
os.environ["WORKBENCH_COMPILE"] = "0"

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

if _WORKERS > 1 and not os.environ.get("OMP_NUM_THREADS"):
    # Each worker's processes (its models, app servers, training runs) compute with its share of
    # the cores, as a person running several torch processes at once sets OMP_NUM_THREADS. With
    # torch's default (every core in every process), the OpenMP threads of two workers spin
    # waiting for cores the other holds: each test then took 1.7x as long (DEVELOPERS.md).
    # Set before torch is imported; the tests of the automatic thread counts unset it.
    from core.cpu_threads import usable_cores  # noqa: E402 (imports no torch)

    os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // _WORKERS))

from headless_chromium import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tiny_models import build_all  # noqa: E402

# Test tiers (pytest.ini): `-m unit` core alone on tiny models, in seconds to a minute or two;
# `app` through a served app (gradio_client); `browser` in Chromium; `real` the packaged SmolLM2
# or MiniLM (slow: a real model's load and steps). A core test on a real model is `real`, not
# `unit`; app and browser tests on one are both.
APP_FILES = {"test_hardening.py", "test_load.py", "test_fresh_machine.py", "test_bench_smoke.py"}
REAL_FILES = {"test_packaged.py", "test_real_explain.py", "test_real_workflows.py"}


# The files that took longest (serial run, junit times), longest first. With several workers
# (scripts/test.sh) they start first, so that no worker is left with a long file at the end while
# the others have finished. Only the order changes; a file missing here starts after them.
LONGEST_FILES = ("test_bench_smoke.py", "test_fresh_machine.py", "test_app_api.py", "test_core_compiled_step.py",
                 "test_app_sharing.py", "test_browser_workflows.py", "test_core_training.py", "test_core_jobs.py",
                 "test_browser_finetune.py", "test_app_jobs.py", "test_browser.py", "test_hardening.py")


def pytest_collection_modifyitems(items):
    if _WORKERS > 1:
        rank = {name: place for place, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: in-file order kept
    for item in items:
        name = item.path.name
        # Asked for by the test itself: app_server also converts SmolLM2, for the tests that use it.
        asks_for_smollm2 = "smollm2_folder" in getattr(item, "_fixtureinfo").argnames
        real = name in REAL_FILES or asks_for_smollm2 or item.get_closest_marker("real")
        if real:
            item.add_marker(pytest.mark.real)
        if name.startswith("test_browser") or {"browser", "page"} & set(item.fixturenames):
            item.add_marker(pytest.mark.browser)
        elif name.startswith("test_app") or name in APP_FILES:
            item.add_marker(pytest.mark.app)
        elif not real:
            item.add_marker(pytest.mark.unit)


SMOLLM2 = "packaged:SmolLM2-135M-Instruct"
BRIGHT = ["the bright moon", "a warm bread", "a small garden", "the green river"]
GLOOMY = ["the old bridge", "before the rain", "a quiet village", "the red house"]


def separable_csv(path, rows_per_class: int = 40):
    """Texts about bright things are 'sunny', gloomy ones 'rainy': easy to learn."""
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(rows_per_class):
        lines.append(f"{rng.choice(['the cat', 'a dog'])} sees {rng.choice(BRIGHT)} and {rng.choice(BRIGHT)},sunny")
        lines.append(f"{rng.choice(['the cat', 'a dog'])} sees {rng.choice(GLOOMY)} and {rng.choice(GLOOMY)},rainy")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models directory holding tiny GPT-2 (plain and chat), BERT (masked LM and sentiment)
    and RoBERTa (<mask>) models, built offline once per session."""
    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def smollm2_folder():
    """The packaged SmolLM2, converted from its GGUF file once per session (about 20 s)."""
    from core.packaged import model_folder

    return model_folder(SMOLLM2)


@pytest.fixture(scope="session")
def registry(models_dir):
    from core.models import ModelRegistry

    return ModelRegistry(models_dir)


@pytest.fixture(scope="session")
def forkserver():
    """One fork server for the session's in-process job runners, as one app server has one: each
    run after the first starts without importing torch again (it does not fork runs whose
    import-time environment differs: test_core_jobs.py gives an injected fault a fork server of
    its own)."""
    from core.jobs.forkserver import ForkServer

    server = ForkServer()
    # Started now, in the session's environment: a test that changes its own (an injected fault)
    # must not become the one that starts it.
    assert server.serves(dict(os.environ)), server.refusal
    yield server
    server.close()


@contextlib.contextmanager
def fake_hub_answering(monkeypatch, status: int, headers: dict | None = None):
    """A local HTTP endpoint standing in for the Hub (HF_ENDPOINT): answers HEAD with `status`
    (and `headers`, such as the Hub's X-Error-Code); `server.requests` lists what was asked,
    `server.authorizations` the Authorization header of each request (None when absent)."""

    class Answer(BaseHTTPRequestHandler):
        def do_HEAD(self):
            server.requests.append(self.path)
            server.authorizations.append(self.headers.get("Authorization"))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.requests = []  # the paths asked for, in order
    server.authorizations = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_hub(monkeypatch):
    """A local endpoint standing in for a Hub that accepts connections and never answers; yields
    the list of connections it accepted (one entry each)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        yield accepted
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The app servers the tests start run `app.py` as `python app.py ...` does, but forked from one
# process per pytest worker that has imported what the app imports (gradio, torch, transformers),
# as the app forks its training runs (core/jobs/forkserver.py). A fresh interpreter took 3.9 s of
# CPU to serve the page, a forked one 0.9 s (the preloaded process 7.7 s, once), and only the
# fresh one imports torch at its first model. A server started with an environment of its own
# (`env`), or after a variable read at import changed, is spawned. A start from a fresh
# interpreter is what the fresh-machine test and bench/startup.py run (and a test_app_api test
# checks that building the app imports no torch).
_APP_PRELOAD = ("transformers.pipelines", "gradio", "app")
# Read when gradio is imported (beyond what the fork server itself compares: the Hub's, torch's).
_READ_AT_GRADIO_IMPORT = ("GRADIO_", "OAUTH_", "OPENID_")
_app_forks = None  # (ForkServer, the environment it imported in), made at the first server


def _fork_app(args: list[str], environment: dict[str, str], stderr_fd: int):
    """`app.py args` forked from the worker's preloaded process, or None when it cannot be."""
    global _app_forks
    from core.jobs.forkserver import PRELOAD, ForkServer

    def common(env):  # the port is read at launch, from the command line's default
        return {key: value for key, value in env.items()
                if key.startswith(_READ_AT_GRADIO_IMPORT) and key != "GRADIO_SERVER_PORT"}

    if _app_forks is None:
        forks = ForkServer(preload=(*PRELOAD, *_APP_PRELOAD))
        _app_forks = (forks, common(environment))
        atexit.register(forks.close)
    forks, imported_in = _app_forks
    if common(environment) != imported_in or not forks.serves(environment):
        return None
    try:
        return forks.start_process(["app.py", *args], environment, REPO_ROOT, stderr_fd)
    except OSError:
        return None


class AppServer:
    """`python app.py ...` in a process of its own, as a user starts it (forked, see above)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        full_env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port), **(env or {})}
        if log_path:
            log_path.write_text("")
        # Appending: a forked server's stdout is copied here by a thread while its stderr
        # writes directly, and neither may overwrite the other.
        self.log = open(log_path, "a") if log_path else open(os.devnull, "w")
        self.process = None if env else _fork_app(args, full_env, self.log.fileno())
        if self.process is not None:
            threading.Thread(target=self._copy_output, args=(self.process.stdout, self.log), daemon=True).start()
        else:
            self.process = subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO_ROOT, env=full_env,
                                            stdout=self.log, stderr=subprocess.STDOUT)
            self.log.close()  # the server has its own copy

    @staticmethod
    def _copy_output(stdout, log) -> None:
        with stdout, log:
            for line in stdout:
                log.write(line)
                log.flush()

    def wait_until_serving(self, timeout: float = 60) -> "AppServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}: {self.output()}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self
            except urllib.error.HTTPError:  # served, but e.g. behind a login
                return self
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"app did not serve {self.url} within {timeout} s: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _serve(models_dir: Path, tmp_path_factory, log_name: str) -> AppServer:
    server = AppServer(["--models-dir", str(models_dir)],
                       log_path=tmp_path_factory.mktemp("logs") / log_name).wait_until_serving()
    server.models_dir = models_dir
    return server


@pytest.fixture(scope="session")
def app_server(models_dir, smollm2_folder, tmp_path_factory):  # SmolLM2 converted before it starts
    server = _serve(models_dir, tmp_path_factory, "app.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def finetune_server(models_dir, smollm2_folder, tmp_path_factory):
    """A second app with its own models folder, for fine-tuning tests (their saved models must
    not change what the other tests list)."""
    own_models = tmp_path_factory.mktemp("finetune-models")
    for name in ("tiny-bert-sentiment", "tiny-gpt2"):
        shutil.copytree(models_dir / name, own_models / name)
    server = _serve(own_models, tmp_path_factory, "finetune.log")
    yield server
    server.stop()


def _client_of(server: AppServer):
    from gradio_client import Client

    return Client(server.url, verbose=False)


@pytest.fixture(scope="session")
def client(app_server):
    return _client_of(app_server)


@pytest.fixture(scope="session")
def _ft_session_client(finetune_server):
    return _client_of(finetune_server)


@pytest.fixture
def ft_client(_ft_session_client):
    """The fine-tuning server's client; after the test its job is left idle, so that a test
    that failed mid-run is the only one to fail (not every later one, refused as busy)."""
    yield _ft_session_client
    status = _ft_session_client.predict(api_name="/finetune_status")
    if status["state"] in ("running", "stopping", "saving"):
        with contextlib.suppress(Exception):  # it may end by itself meanwhile
            _ft_session_client.predict(api_name="/finetune_cancel")
        status = _ft_session_client.predict(until="cancelled,save failed,finished,failed", timeout=300,
                                            api_name="/finetune_wait")
    if status["state"] in ("cancelled", "save failed"):
        _ft_session_client.predict(api_name="/finetune_discard")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # What a page shows comes after server work (an upload read while a run trains, a model
    # loaded): assertions wait for it up to 30 s, not Playwright's 5, on a busy machine.
    expect.set_options(timeout=30_000)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app_server.url)
    yield page
    context.close()
