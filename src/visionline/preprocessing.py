"""Image decoding and preprocessing that travel with the model (see `visionline_edge.preprocessing`).

The one implementation lives in the edge runtime, so an edge box that installs only
`visionline-edge` applies exactly the preprocessing that training, evaluation and the server use.
"""

from __future__ import annotations

from visionline_edge.preprocessing import (
    DEFAULT_MAX_PIXELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    ResizeMode,
    decode_image,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "ResizeMode",
    "decode_image",
]
