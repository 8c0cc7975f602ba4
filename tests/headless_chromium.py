"""Debian's Chromium, headless, as the browser tests (conftest.py) and bench/watching_page.py
launch it through Playwright (never `playwright install`: scripts/install-chromium.sh installs it)."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
