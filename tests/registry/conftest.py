"""The registry tests reuse the evaluation builders (a project, a dataset version, two models)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))

from eval_builders import eval_env  # noqa: F401
