#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "The browser tests need Chromium at /usr/bin/chromium; install it with your package manager." >&2
  exit 1
fi
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
$sudo_cmd apt-get update
$sudo_cmd apt-get install -y chromium chromium-driver
