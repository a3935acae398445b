"""The synthetic apple packing line: procedural images with defects, deliveries and drift.

Numpy + Pillow only, seeded and deterministic: image `index` of a stream depends only on the
seed, so datasets, delivery streams and drift scenarios are reproducible ground truth for
training, per-delivery defect-rate estimation and drift detection.
"""

from visionline.synth._camera import CameraState, kelvin_rgb
from visionline.synth._config import (
    MAX_SIZE,
    MIN_SIZE,
    TRAINING_VARIETIES,
    CameraConfig,
    Drift,
    DriftConfig,
    Subtype,
    SynthConfig,
    Variety,
    build_config,
)
from visionline.synth._generate import (
    DatasetSummary,
    DeliveriesSummary,
    Supplier,
    SynthLine,
    generate_dataset,
    generate_deliveries,
    save_jpeg,
)
from visionline.synth._render import (
    AppleRenderer,
    AppleSpec,
    RenderResult,
    render_apple,
    severity_level,
)
from visionline.synth._sheet import contact_sheet

__all__ = [
    "MAX_SIZE",
    "MIN_SIZE",
    "TRAINING_VARIETIES",
    "AppleRenderer",
    "AppleSpec",
    "CameraConfig",
    "CameraState",
    "DatasetSummary",
    "DeliveriesSummary",
    "Drift",
    "DriftConfig",
    "RenderResult",
    "Subtype",
    "Supplier",
    "SynthConfig",
    "SynthLine",
    "Variety",
    "build_config",
    "contact_sheet",
    "generate_dataset",
    "generate_deliveries",
    "kelvin_rgb",
    "render_apple",
    "save_jpeg",
    "severity_level",
]
