"""Edge runtime: signature verification without `cryptography`, image-quality statistics."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from visionline.errors import ConfigError
from visionline.export.runtime import _ed25519_verify_pure, image_quality, read_public_key


def test_pure_python_ed25519_agrees_with_cryptography() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    message = b'{"name": "apples"}'
    signature = key.sign(message)
    assert _ed25519_verify_pure(public, message, signature)
    assert not _ed25519_verify_pure(public, message + b" ", signature)
    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert not _ed25519_verify_pure(other, message, signature)
    assert not _ed25519_verify_pure(public, message, signature[:-1] + bytes([signature[-1] ^ 1]))


def test_read_public_key_parses_pem_and_rejects_garbage(tmp_path) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert read_public_key(pem) == raw
    (tmp_path / "k.pub").write_bytes(pem)
    assert read_public_key(tmp_path / "k.pub") == raw
    with pytest.raises(ConfigError):
        read_public_key(b"not a key at all, definitely more than 32 bytes long")


def test_image_quality_measures_what_it_names() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, size=(1, 32, 32, 3)).astype(np.uint8)
    flat_grey = np.full((1, 32, 32, 3), 200, dtype=np.uint8)
    dark_red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    dark_red[..., 0] = 120
    q = image_quality(np.concatenate([sharp, flat_grey, dark_red]))
    assert q.shape == (3, 4)
    brightness, contrast, sharpness, colourfulness = q.T
    assert brightness[1] == pytest.approx(200, abs=0.5) and brightness[2] < brightness[1]
    assert contrast[1] == pytest.approx(0, abs=1e-3) and contrast[0] > 30
    assert sharpness[0] > 1000 and sharpness[1] == pytest.approx(0, abs=1e-3)
    assert colourfulness[1] == pytest.approx(0, abs=1e-3) and colourfulness[2] > 30
    bgr = image_quality(dark_red[..., ::-1], channel_order="BGR")
    assert np.allclose(bgr, q[2:3])
