import sys
from pathlib import Path

# The test modules import `*_support` helpers from this folder (pytest runs in importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Batch-scoring fixtures (a tiny bundle, a folder of test images) for test_score*.py.
from score_support import onnx_model, score_bundle, score_images  # noqa: F401
