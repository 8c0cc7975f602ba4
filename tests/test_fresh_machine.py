"""The README's run command on a fresh machine with no Hub: a new checkout, a new venv, an empty
home (no converted models, no Hugging Face cache), HF_HUB_OFFLINE=1. The page must come up and
the generation panel answer with the packaged SmolLM2."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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
    # pip's settings (package indexes, wheel folders) belong to the machine, not to the home this
    # test empties: a fresh checkout on this machine installs through them, as CI does.
    keep = {key: value for key, value in os.environ.items()
            if key in ("PATH", "LANG", "LC_ALL", "TMPDIR", "XDG_CONFIG_DIRS") or key.startswith("PIP_")}
    for pip_config in (Path(".config", "pip", "pip.conf"), Path(".pip", "pip.conf")):
        if (Path.home() / pip_config).is_file():
            (home / pip_config).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path.home() / pip_config, home / pip_config)
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


def test_the_readme_run_command_serves_a_page_that_generates_with_smollm2_offline(browser, tmp_path):
    from gradio_client import Client
    from playwright.sync_api import expect

    checkout, home = tmp_path / "checkout", tmp_path / "home"
    checkout.mkdir()
    home.mkdir()
    fresh_checkout(checkout)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp_path / "run.log"
    command = readme_run_command()
    assert command == "bash scripts/run.sh"
    with open(log_path, "w") as log:
        process = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=fresh_environment(home, port),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SETUP_AND_START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the run command exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no page after {SETUP_AND_START_TIMEOUT_S} s: " \
                                                f"{log_path.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        output = log_path.read_text()
        assert "Converted into" in output and "SmolLM2-135M-Instruct: ready" in output  # progress shown

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
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(checkout / ".venv", ignore_errors=True)  # over a gigabyte; the log stays
