"""`python -m core.training`: a training run from the command line (core/training/cli.py)."""

import sys

from core.training.cli import main

sys.exit(main())
