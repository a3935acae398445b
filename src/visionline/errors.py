"""Domain exceptions. Each message is one sentence that names the fix.

The CLI turns any `VisionlineError` into that sentence and a non-zero exit; the server turns it
into a 4xx. Nothing here imports anything heavy, so the edge runtime can use it too.
"""

from __future__ import annotations


class VisionlineError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class ConfigError(VisionlineError):
    """The project file or a command's options are wrong."""

    exit_code = 2


class ProjectNotFoundError(ConfigError):
    """No `visionline.yaml` above the working directory."""


class NotFoundError(VisionlineError):
    """A dataset version, blob, model or run that does not exist."""


class AmbiguousIdError(VisionlineError):
    """A short id prefix that matches more than one object."""


class DataError(VisionlineError):
    """Input data that cannot be used: missing files, bad manifests, wrong splits."""


class ImageError(DataError):
    """An image that cannot be decoded, is truncated, or is too large."""


class IntegrityError(DataError):
    """Stored bytes whose hash no longer matches their address, or a tampered bundle."""


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
