"""The exceptions the edge runtime raises. Each message is one sentence that names the fix.

`visionline.errors` builds on these classes, so the visionline CLI and server treat an error from
the edge runtime exactly like their own (one sentence, a non-zero exit or a 4xx).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ImageError",
    "IntegrityError",
    "NotFoundError",
    "VisionlineError",
]


class VisionlineError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class ConfigError(VisionlineError):
    """The project file or a command's options are wrong."""

    exit_code = 2


class NotFoundError(VisionlineError):
    """A dataset version, blob, model, bundle or key that does not exist."""


class DataError(VisionlineError):
    """Input data that cannot be used: missing files, bad manifests, wrong splits."""


class ImageError(DataError):
    """An image that cannot be decoded, is truncated, or is too large."""


class IntegrityError(DataError):
    """Stored bytes whose hash no longer matches their address, or a tampered bundle."""
