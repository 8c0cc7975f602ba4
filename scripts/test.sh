#!/usr/bin/env bash
# Set up (first time) and run the whole test suite offline: unit, API and browser tests.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k fill_mask
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-venv.sh requirements-dev.txt
bash scripts/install-chromium.sh
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec python -m pytest "$@"
