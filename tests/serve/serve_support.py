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
import pytest
from PIL import Image

from visionline.preprocessing import Preprocessing

CLASSES = ["good", "bruise", "rot"]
SIZE = 64


_ONNX_MODELS: dict[int, Path] = {}
"""Exported models by id of the session's TempPathFactory (a dataclass, so not hashable)."""


def export_onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenetv3_small_100 at 64 px with a random head, exported once per session: conftest.py's
    fixture and the copy of it that tests/pipeline/score_support.py loads both come here."""
    key = id(tmp_path_factory)
    if key not in _ONNX_MODELS:
        import torch

        from visionline.export import export_onnx
        from visionline.train import ModelSpec, build_model

        torch.manual_seed(0)
        spec = ModelSpec(
            backbone="mobilenetv3_small_100", class_names=CLASSES, preprocessing=Preprocessing(size=SIZE)
        )
        model = build_model(spec).eval()
        _ONNX_MODELS[key] = export_onnx(model, SIZE, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return _ONNX_MODELS[key]


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


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A fresh P-256 key and a self-signed certificate for localhost and 127.0.0.1 (PEM files);
    clients trust the certificate itself."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def serving(repo: Path, hook=None, **overrides) -> Iterator:
    """A server on free loopback ports, waited on until its first load is done."""
    from visionline.serve import InferenceServer, ServerConfig

    config = ServerConfig(repository=repo, http_port=0, grpc_port=0, **overrides)
    server = InferenceServer(config, hook=hook)
    with server.running():
        server.wait_ready()
        yield server
