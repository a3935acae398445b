"""Option enums of the export stage, importable without numpy, torch or onnx (fast `--help`)."""

from __future__ import annotations

from enum import Enum


class Calibration(str, Enum):
    """How INT8 activation ranges are estimated from the calibration images."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
