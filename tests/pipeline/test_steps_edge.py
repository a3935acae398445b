"""The deploy step installs only a bundle that the edge runtime verified (and a trusted key signed)."""

from __future__ import annotations

import json
import shutil

import pytest
from edge_support import make_bundle

from visionline.errors import ConfigError, IntegrityError
from visionline.pipeline._steps_edge import install_bundle


@pytest.fixture
def keys(tmp_path):
    from visionline.export import generate_keys

    private, public = generate_keys(tmp_path / "keys")
    store = tmp_path / "trusted-keys"
    store.mkdir()
    shutil.copyfile(public, store / "plant.pub")
    return private, store


def test_a_signed_bundle_is_installed_and_reinstalling_checks_it_again(tmp_path, keys):
    private, store = keys
    bundle = make_bundle(tmp_path / "bundle", private)
    target = tmp_path / "repo" / "apples" / "1"
    install_bundle(bundle, target, trust_store=store, require_signature=True)
    assert (target / "bundle.json").read_bytes() == (bundle / "bundle.json").read_bytes()
    (target / "model.onnx").write_bytes(b"tampered in the repository")
    with pytest.raises(IntegrityError, match=r"model.onnx .*\(sha256 mismatch\)"):
        install_bundle(bundle, target, trust_store=store, require_signature=True)


def test_unsigned_or_tampered_bundles_never_reach_the_repository(tmp_path, keys):
    private, store = keys
    target = tmp_path / "repo" / "apples" / "1"
    unsigned = make_bundle(tmp_path / "unsigned")
    with pytest.raises(IntegrityError, match="is not signed"):
        install_bundle(unsigned, target, trust_store=store, require_signature=True)
    with pytest.raises(ConfigError, match="no key is trusted"):
        install_bundle(unsigned, target, require_signature=True)
    tampered = make_bundle(tmp_path / "tampered", private)
    manifest = json.loads((tampered / "bundle.json").read_text())
    manifest["threshold"] = 0.99
    (tampered / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="bundle.json .* was changed after key"):
        install_bundle(tampered, target, trust_store=store)
    assert not target.exists() and list(target.parent.iterdir()) == []
    install_bundle(unsigned, target)  # without keys: the hashes are still checked
    assert (target / "bundle.json").is_file()
