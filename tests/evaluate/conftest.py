"""Fixtures for the evaluation tests (builders live in eval_builders.py, shared with registry/CLI)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_builders import eval_env  # noqa: F401
