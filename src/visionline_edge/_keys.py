"""Ed25519 public keys the device trusts, and the check of a bundle's signature (`cryptography`).

A trust store is a folder of PEM public keys (`*.pub` or `*.pem`, one signer each) or one PEM
file; `--pubkey FILE` adds a single key. A key is named by its fingerprint, `key_id`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from visionline_edge.errors import ConfigError, NotFoundError

SIGNED_CONTEXT = b"visionline-edge bundle signature v2\n"
"""Prefixed to bundle.json's bytes before signing, so a bundle signature is never valid as
anything else (and no other signature by the same key is valid as a bundle signature)."""

KEY_SUFFIXES = (".pub", ".pem")
_FIX = "pass the .pub file made by 'visionline keys generate'"


def key_id(public: bytes) -> str:
    """A short fingerprint that names a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public).hexdigest()[:16]


def signed_message(manifest_bytes: bytes) -> bytes:
    """Exactly what a bundle signature covers: the context and bundle.json's bytes (its settings,
    threshold and preprocessing, and the sha256 of every other file)."""
    return SIGNED_CONTEXT + manifest_bytes


def _parse_pem(data: bytes, source: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source} is not a PEM public key; {_FIX}.") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{source} is not an Ed25519 public key; {_FIX}.")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def read_public_key(key: str | os.PathLike[str] | bytes) -> bytes:
    """The raw 32-byte Ed25519 key from a PEM file path, PEM bytes or raw bytes."""
    if isinstance(key, (bytes, bytearray)):
        return bytes(key) if len(key) == 32 else _parse_pem(bytes(key), "The public key")
    path = Path(key)
    if not path.is_file():
        raise NotFoundError(f"No public key at {path}; {_FIX}.")
    return _parse_pem(path.read_bytes(), str(path))


def _pem_blocks(data: bytes) -> list[bytes]:
    end = b"-----END PUBLIC KEY-----"
    return [part + end for part in data.split(end) if b"-----BEGIN PUBLIC KEY-----" in part]


def _store_keys(store: Path) -> dict[str, bytes]:
    if store.is_dir():
        files = sorted(
            p for p in store.iterdir() if p.suffix in KEY_SUFFIXES and not p.name.startswith(".")
        )
        keys = [read_public_key(p) for p in files]
    elif store.is_file():
        keys = [_parse_pem(block, str(store)) for block in _pem_blocks(store.read_bytes())]
    else:
        raise NotFoundError(
            f"No trust store at {store}; create the folder and copy the signer's .pub file into it."
        )
    if not keys:
        raise ConfigError(
            f"Trust store {store} holds no public key; copy the signer's visionline-signing.pub into it."
        )
    return {key_id(k): k for k in keys}


def trusted_keys(
    pubkey: str | os.PathLike[str] | bytes | None = None,
    trust_store: str | os.PathLike[str] | None = None,
) -> dict[str, bytes]:
    """key id → raw key for every key the device trusts: `pubkey` plus the trust store's keys."""
    keys: dict[str, bytes] = {}
    if trust_store is not None:
        keys.update(_store_keys(Path(trust_store)))
    if pubkey is not None:
        public = read_public_key(pubkey)
        keys[key_id(public)] = public
    return keys


def resolve_trust(
    pubkey: str | os.PathLike[str] | bytes | None = None,
    trust_store: str | os.PathLike[str] | None = None,
    require_signature: bool = False,
) -> dict[str, bytes]:
    """`trusted_keys`, refusing to go on without any key when a signature is required; callers
    run it at start-up so a wrong key path fails at once, not at the first bundle."""
    keys = trusted_keys(pubkey, trust_store)
    if require_signature and not keys:
        raise ConfigError(
            "A signature is required but no key is trusted; pass --trust-store DIR or --pubkey FILE."
        )
    return keys


def verify_signature(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `public`'s Ed25519 signature of `message`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True
