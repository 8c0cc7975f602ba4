#!/usr/bin/env bash
# Set up (first time) and serve Model Workbench. Extra arguments go to app.py, e.g.
#   bash scripts/run.sh --host 0.0.0.0 --port 8080 --auth ada:secret
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-venv.sh requirements.txt
exec python app.py "$@"
