"""Domain exceptions. Each message is one sentence that names the fix.

The CLI turns any `VisionlineError` into that sentence and a non-zero exit; the server turns it
into a 4xx. The base classes come from the edge runtime (`visionline_edge.errors`), so an error
raised while verifying or running a bundle is one of these too. Nothing here imports anything heavy.
"""

from __future__ import annotations

from visionline_edge.errors import (
    ConfigError,
    DataError,
    ImageError,
    IntegrityError,
    NotFoundError,
    VisionlineError,
)

__all__ = [
    "AmbiguousIdError",
    "ConfigError",
    "DataError",
    "GateFailedError",
    "ImageError",
    "IntegrityError",
    "NotFoundError",
    "ProjectNotFoundError",
    "ServiceUnavailableError",
    "TrainingError",
    "UnsafeFileError",
    "VisionlineError",
]


class ProjectNotFoundError(ConfigError):
    """No `visionline.yaml` above the working directory."""


class AmbiguousIdError(VisionlineError):
    """A short id prefix that matches more than one object."""


class ServiceUnavailableError(VisionlineError):
    """A server that visionline needs (S3, PostgreSQL, MLflow, Label Studio) did not answer."""


class TrainingError(VisionlineError):
    """Training cannot start or continue with the given settings."""


class GateFailedError(VisionlineError):
    """A quality gate failed; the message lists which and why."""

    exit_code = 3


class UnsafeFileError(DataError):
    """A model or checkpoint file holding Python objects beyond tensors and plain data, refused
    because unpickling such objects can run code."""
