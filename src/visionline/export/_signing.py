"""Ed25519 signing keys and bundle signatures (`cryptography`)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from visionline.errors import ConfigError, NotFoundError
from visionline_edge import SIGNATURE, SIGNATURE_FORMAT, key_id, signed_message

PRIVATE_KEY_FILE = "visionline-signing.key"
PUBLIC_KEY_FILE = "visionline-signing.pub"


def generate_keys(out_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (private key readable by the owner only); return both paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    if not force and (private_path.exists() or public_path.exists()):
        raise ConfigError(
            f"{private_path} already exists; pass --force to replace it or pick another --out."
        )
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path):  # -> Ed25519PrivateKey
    """Read a PEM Ed25519 private key written by `generate_keys`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not path.is_file():
        raise NotFoundError(
            f"No signing key at {path}; create one with 'visionline keys generate --out DIR'."
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key; create one with 'visionline keys generate'."
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} is not an Ed25519 key; create one with 'visionline keys generate'."
        )
    return key


def sign_file(manifest_path: Path, key_path: Path) -> Path:
    """Sign the exact bytes of a manifest (after the edge runtime's context prefix, see
    `visionline_edge.signed_message`); the signature goes next to it as `bundle.sig`."""
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(key_path)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signature = key.sign(signed_message(manifest_path.read_bytes()))
    path = manifest_path.parent / SIGNATURE
    path.write_text(
        json.dumps(
            {
                "format": SIGNATURE_FORMAT,
                "algorithm": "ed25519",
                "key_id": key_id(public),
                "signature": base64.b64encode(signature).decode(),
            },
            indent=2,
        )
        + "\n"
    )
    return path
