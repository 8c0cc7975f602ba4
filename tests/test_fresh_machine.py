"""The README's run command on a fresh machine with no Hub: a new checkout, a new venv, an empty
home (no converted models, no Hugging Face cache), HF_HUB_OFFLINE=1. The page must come up and
the generation panel answer with the packaged SmolLM2."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port

SETUP_AND_START_TIMEOUT_S = 900  # a new venv (a few minutes) plus the one-off conversion


def readme_run_command() -> str:
    block = re.search(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S).group(1)
    return block.splitlines()[0].split("#")[0].strip()


def fresh_checkout(target) -> None:
    """The project's files as a clone has them (tracked files only: no .venv, no models)."""
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, target / name)


def fresh_environment(home, port: int) -> dict[str, str]:
    keep = {key: value for key, value in os.environ.items()
            if key in ("PATH", "LANG", "LC_ALL", "TMPDIR", "XDG_CONFIG_DIRS")}
    venv = os.environ.get("VIRTUAL_ENV") or str(REPO_ROOT / ".venv")
    # Not our venv's python: the command must build its own from the system's python3.
    keep["PATH"] = os.pathsep.join(part for part in keep.get("PATH", "").split(os.pathsep)
                                   if not part.startswith(venv))
    pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                               text=True).stdout.strip()
    return {**keep, "HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_SERVER_PORT": str(port),
            # Downloads already made on this machine are reused (speed only: a fresh machine
            # downloads the same files).
            "PIP_CACHE_DIR": pip_cache or str(home / ".cache" / "pip")}


class FreshMachineRun:
    """The README's run command in a new checkout with an empty home, started in the background
    when the session starts (conftest.py): its setup (a new venv, then the one-off conversion)
    takes minutes of mostly one core, which the other tests share meanwhile instead of waiting
    for it at the end. The test checks what it serves."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="workbench-fresh-machine-"))
        self.checkout, self.home = self.folder / "checkout", self.folder / "home"
        self.checkout.mkdir()
        self.home.mkdir()
        fresh_checkout(self.checkout)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.folder / "run.log"
        self.command = readme_run_command()
        self.started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(["bash", "-c", self.command], cwd=self.checkout,
                                            env=fresh_environment(self.home, self.port), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text()[-3000:]

    def wait_until_serving(self) -> None:
        while True:
            assert self.process.poll() is None, f"the run command exited: {self.log()}"
            assert time.monotonic() < self.started + SETUP_AND_START_TIMEOUT_S, \
                f"no page after {SETUP_AND_START_TIMEOUT_S} s: {self.log()}"
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(1)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)  # over a gigabyte


@pytest.fixture
def fresh_machine(request):
    run = getattr(request.config, "fresh_machine_run", None) or FreshMachineRun()  # started early, or now
    yield run
    run.stop()


def test_the_readme_run_command_serves_a_page_that_generates_with_smollm2_offline(browser, fresh_machine):
    from gradio_client import Client
    from playwright.sync_api import expect

    assert fresh_machine.command == "bash scripts/run.sh"
    fresh_machine.wait_until_serving()
    output = fresh_machine.log_path.read_text()
    assert "Converted into" in output and "SmolLM2-135M-Instruct: ready" in output  # progress shown
    url = fresh_machine.url

    client = Client(url, verbose=False)
    # No model named: the panel's default, which offline is the packaged SmolLM2.
    answer, *_ = client.predict(prompt="What is the capital of France?", max_new_tokens=30, temperature=0,
                                  api_name="/generate")
    assert "Paris" in answer

    # What a person sees: a ready model in generation, and advice where nothing is ready.
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    expect(page.get_by_role("combobox", name="Model", exact=True).filter(visible=True)).to_have_value(
        "SmolLM2-135M-Instruct (offline)")
    page.get_by_role("tab", name="Sentiment").click()
    expect(page.locator("#offline-note-text-classification")).to_contain_text("Train the starter model")
    page.get_by_role("tab", name="Fill-mask").click()
    expect(page.locator("#offline-note-fill-mask")).to_contain_text("needs a masked language model")
    page.close()
