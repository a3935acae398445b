"""Helpers for the server tests: bundles in the export stage's format, test images, a live server.

`conftest.py` puts this folder on sys.path (the suite runs with --import-mode=importlib).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from visionline.preprocessing import Preprocessing

CLASSES = ["good", "bruise", "rot"]
SIZE = 64


def write_bundle(onnx_model: Path, target: Path, version: str, threshold: float = 0.5, key: Path | None = None) -> Path:
    """A bundle directory in the export stage's format (manifest, sha256 of each file, signature)."""
    from visionline.export._bundle import finalize_bundle

    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_model, target / "model.onnx")
    manifest = {
        "name": "apples",
        "version": version,
        "classes": CLASSES,
        "class_labels": {"good": "good", "bruise": "defect", "rot": "defect"},
        "threshold": threshold,
        "preprocessing": Preprocessing(size=SIZE).to_dict(),
        "models": {"fp32": {"file": "model.onnx"}},
        "deployed": "fp32",
    }
    finalize_bundle(target, manifest, signing_key=key)
    return target


def image_bytes(seed: int = 0, size: int = 48, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@contextmanager
def serving(repo: Path, hook=None, **overrides) -> Iterator:
    """A server on free loopback ports, waited on until its first load is done."""
    from visionline.serve import InferenceServer, ServerConfig

    config = ServerConfig(repository=repo, http_port=0, grpc_port=0, **overrides)
    server = InferenceServer(config, hook=hook)
    with server.running():
        server.wait_ready()
        yield server
