#!/usr/bin/env bash
# Set up (first time) and serve Model Workbench. Extra arguments go to app.py, e.g.
#   bash scripts/run.sh --host 0.0.0.0 --port 8080 --auth ada:secret
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-venv.sh requirements.txt
# Packaged models: converts the GGUF SmolLM2 once (progress shown; bench/packaged_load.py times it) so the
# app later loads it in about a second. A failure here is reported and the app starts anyway.
python -m core.packaged || echo "Packaged models are not ready; the app starts without them." >&2
exec python app.py "$@"
