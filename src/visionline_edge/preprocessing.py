"""Image decoding and preprocessing that travel with the model.

One `Preprocessing` value is used by the training data pipeline, written into the edge bundle and
applied by the server and the edge runtime, so PyTorch, ONNX FP32 and ONNX INT8 see identical
pixels. It lives in the edge runtime (`visionline_edge`), which has only numpy and Pillow for it;
`visionline.preprocessing` is the same module under the name the rest of visionline uses.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visionline_edge.errors import ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "ResizeMode",
    "decode_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_MAX_PIXELS = 40_000_000
"""Larger images are refused before decoding: a decompression-bomb guard."""


class ResizeMode(str, Enum):
    """How an image of any aspect ratio becomes a square model input."""

    STRETCH = "stretch"
    CENTER_CROP = "center_crop"
    LETTERBOX = "letterbox"


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn a decoded image into a model input."""

    size: int = 128
    resize_mode: ResizeMode = ResizeMode.STRETCH
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    autocontrast: bool = False
    """Stretch each image's own intensity range to 0-255 before resizing (lighting-invariant)."""
    layout: str = field(default="NCHW", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize_mode", ResizeMode(self.resize_mode))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.channel_order not in ("RGB", "BGR"):
            raise ImageError(f"channel_order must be RGB or BGR, not {self.channel_order!r}.")
        if not 16 <= self.size <= 1024:
            raise ImageError(f"Preprocessing size must be between 16 and 1024, not {self.size}.")

    def resize(self, image: Image.Image) -> Image.Image:
        """Convert to RGB and bring to `size`×`size` with this spec's resize mode."""
        image = image.convert("RGB")
        if self.autocontrast:
            image = ImageOps.autocontrast(image, preserve_tone=True)
        if self.resize_mode is ResizeMode.STRETCH:
            return image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        width, height = image.size
        if self.resize_mode is ResizeMode.CENTER_CROP:
            scale = self.size / min(width, height)
        else:
            scale = self.size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if self.resize_mode is ResizeMode.CENTER_CROP:
            left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
            return image.crop((left, top, left + self.size, top + self.size))
        canvas = Image.new("RGB", (self.size, self.size), (0, 0, 0))
        canvas.paste(image, ((self.size - new_w) // 2, (self.size - new_h) // 2))
        return canvas

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resized HWC uint8 pixels: what the training cache stores."""
        pixels = np.asarray(self.resize(image), dtype=np.uint8)
        return pixels[..., ::-1] if self.channel_order == "BGR" else pixels

    def normalize(self, batch_hwc: np.ndarray) -> np.ndarray:
        """NHWC uint8 → NCHW float32 normalised with mean/std."""
        batch = batch_hwc.astype(np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if self.channel_order == "BGR":
            mean, std = mean[::-1], std[::-1]
        batch = (batch - mean) / std
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """A batch of decoded images → a model-ready NCHW float32 batch."""
        return self.normalize(np.stack([self.to_uint8(image) for image in images]))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["resize_mode"] = self.resize_mode.value
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        fields = {k: v for k, v in data.items() if k != "layout"}
        return cls(**fields)


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"Image is {width}x{height} pixels, above the limit of {max_pixels:,}; "
            "resize it or raise the pixel limit."
        )


BASE64_IMAGE_PREFIXES = (b"/9j/", b"iVBORw0KGgo", b"R0lGOD", b"UklGR", b"SUkq", b"TU0A")
"""How JPEG, PNG, GIF, WebP and TIFF bytes begin once base64-encoded: a client that sends a
JSON string holding such text meant to send the image, so the error says how."""


def _is_base64_image(data: bytes) -> bool:
    return data.lstrip()[:16].startswith(BASE64_IMAGE_PREFIXES)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes fully, refusing corrupt, truncated or oversized input.

    Safe to call from many threads at once (the server does): the pixel count is checked
    explicitly between reading the header and decoding, and no process-wide state such as the
    warning filters (`warnings.catch_warnings` is not thread-safe) is touched.
    """
    try:
        image = Image.open(io.BytesIO(data))
        _check_pixels(image, max_pixels)
        image.load()
        _check_pixels(image, max_pixels)  # a few formats (ICO, ICNS) pick their largest frame
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"Image refused as a decompression bomb ({exc}); resize it first.") from exc
    except UnidentifiedImageError as exc:  # its text names only an in-memory buffer
        if _is_base64_image(data):
            raise ImageError(
                "Image cannot be decoded: it is base64 text, not image bytes; send the JPEG or "
                "PNG bytes themselves (over REST JSON: the binary data extension, or a multipart "
                "upload)."
            ) from exc
        raise ImageError(
            "Image cannot be decoded: it is in no image format Pillow reads; send a valid JPEG "
            "or PNG."
        ) from exc
    except Exception as exc:  # Pillow raises many types for bad input
        raise ImageError(
            f"Image cannot be decoded ({type(exc).__name__}: {exc}); send a valid JPEG or PNG."
        ) from exc
    return image
