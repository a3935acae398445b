"""visionline-edge: the trusted runtime that verifies and runs visionline bundles on a device.

It is installed on the edge box as its own small distribution (numpy, Pillow, onnxruntime,
cryptography) and is never loaded from the bundle it checks. The full `visionline` package
includes it, so the server and the batch scorer verify bundles with this same code.

    from visionline_edge import load_bundle
    model = load_bundle("apples.tar.gz", trust_store="/etc/visionline/trusted-keys",
                        require_signature=True)
    model.predict([open("apple.jpg", "rb").read()]).decisions

Names load lazily, so `visionline_edge.errors` stays free of numpy and Pillow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BUNDLE_FORMAT": "_verify",
    "MANIFEST": "_verify",
    "SIGNATURE": "_verify",
    "SIGNATURE_FORMAT": "_verify",
    "verify_bundle": "_verify",
    "release_unpacked": "_verify",
    "key_id": "_keys",
    "read_public_key": "_keys",
    "resolve_trust": "_keys",
    "signed_message": "_keys",
    "trusted_keys": "_keys",
    "EdgeModel": "_model",
    "EdgePrediction": "_model",
    "ImagePrediction": "_model",
    "load_bundle": "_model",
    "QUALITY_STATS": "_quality",
    "image_quality": "_quality",
}

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "QUALITY_STATS",
    "SIGNATURE",
    "SIGNATURE_FORMAT",
    "EdgeModel",
    "EdgePrediction",
    "ImagePrediction",
    "image_quality",
    "key_id",
    "load_bundle",
    "read_public_key",
    "release_unpacked",
    "resolve_trust",
    "signed_message",
    "trusted_keys",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"visionline_edge.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'visionline_edge' has no attribute {name!r}")
