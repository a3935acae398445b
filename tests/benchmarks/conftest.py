import sys
from pathlib import Path

# The benchmark scripts import each other by file name (`from _record import ...`), as they do
# when run as `python benchmarks/x.py`; pytest runs in importlib mode.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
