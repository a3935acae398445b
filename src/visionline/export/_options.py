"""Option enums of the export stage, importable without numpy, torch or onnx (fast `--help`)."""

from __future__ import annotations

from enum import Enum


class Calibration(str, Enum):
    """How INT8 activation ranges are estimated from the calibration images.

    `auto` tries MinMax, Entropy and Percentile and keeps the one whose INT8 model changes the
    fewest decisions (then the least score) on the calibration images.
    """

    AUTO = "auto"
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class Int8Mode(str, Enum):
    """`visionline export --int8 MODE`: post-training quantisation alone, or with a
    quantisation-aware fine-tune when the post-training model fails its gate."""

    PTQ = "ptq"
    QAT = "qat"


MEASURED_CALIBRATIONS = (Calibration.MINMAX, Calibration.ENTROPY, Calibration.PERCENTILE)
