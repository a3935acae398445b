"""Trusted keys: PEM public keys from a file, a trust-store folder or one PEM file of several."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from visionline.errors import ConfigError, NotFoundError
from visionline_edge import key_id, read_public_key, resolve_trust, trusted_keys


def _pem() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate().public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_read_public_key_parses_pem_and_rejects_garbage(tmp_path) -> None:
    pem, raw = _pem()
    assert read_public_key(pem) == raw
    (tmp_path / "k.pub").write_bytes(pem)
    assert read_public_key(tmp_path / "k.pub") == raw
    with pytest.raises(ConfigError, match="not a PEM public key"):
        read_public_key(b"not a key at all, definitely more than 32 bytes long")
    with pytest.raises(NotFoundError, match="No public key at"):
        read_public_key(tmp_path / "missing.pub")


def test_a_non_ed25519_key_is_refused_naming_its_file(tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    rsa_like = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ec.pub").write_bytes(
        rsa_like.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ConfigError, match=r"ec\.pub is not an Ed25519 public key"):
        trusted_keys(trust_store=tmp_path)


def test_a_trust_store_folder_or_file_gives_every_key(tmp_path) -> None:
    (pem_a, raw_a), (pem_b, raw_b), (pem_c, _) = _pem(), _pem(), _pem()
    store = tmp_path / "store"
    store.mkdir()
    (store / "line-1.pub").write_bytes(pem_a)
    (store / "line-2.pem").write_bytes(pem_b)
    (store / "README.txt").write_text("keys of the plant's signers")
    assert trusted_keys(trust_store=store) == {key_id(raw_a): raw_a, key_id(raw_b): raw_b}
    (tmp_path / "all.pem").write_bytes(pem_a + pem_b)
    assert set(trusted_keys(trust_store=tmp_path / "all.pem")) == {key_id(raw_a), key_id(raw_b)}
    (tmp_path / "c.pub").write_bytes(pem_c)
    assert len(trusted_keys(tmp_path / "c.pub", store)) == 3


def test_an_empty_or_missing_trust_store_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="holds no public key"):
        trusted_keys(trust_store=tmp_path)
    with pytest.raises(NotFoundError, match="No trust store at"):
        trusted_keys(trust_store=tmp_path / "nope")
    with pytest.raises(ConfigError, match="no key is trusted"):
        resolve_trust(require_signature=True)
    assert resolve_trust() == {}
