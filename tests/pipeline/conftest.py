import sys
from pathlib import Path

# The test modules import `*_support` helpers from this folder (pytest runs in importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))
