#!/usr/bin/env bash
# Set up (first time) and run the whole test suite offline: unit, API and browser tests.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k fill_mask
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-venv.sh requirements-dev.txt
bash scripts/install-chromium.sh
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
# Test files run in parallel, one pytest worker per core (at most 4: each starts its own app
# servers and browser), a file's tests together on one worker (they share its servers). Pass
# -n 0 to run serially.
workers=$(python -c "from core.cpu_threads import usable_cores; print(min(4, usable_cores()))")
exec python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
