"""Bundle verification refuses every kind of tampering, each with one sentence naming the file or key."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from edge_support import make_bundle

from visionline.errors import ConfigError, IntegrityError, NotFoundError
from visionline.export._bundle import archive_bundle, finalize_bundle
from visionline_edge import key_id, read_public_key, release_unpacked, verify_bundle


def _one_sentence(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_a_good_signed_bundle_passes_with_a_trust_store_or_one_key(bundle, trust_store, keys):
    manifest = verify_bundle(bundle, trust_store=trust_store, require_signature=True)
    assert manifest["_signed_by"] == key_id(read_public_key(keys[1]))
    assert set(manifest["files"]) == {"model.onnx", "reference/scores.npy"}
    assert verify_bundle(bundle, keys[1])["threshold"] == 0.5
    assert verify_bundle(bundle)["_signed_by"] is None  # hashes only
    assert manifest["_unpacked"] is None  # a directory is checked in place


def test_a_good_archive_passes(bundle, trust_store, tmp_path):
    archive = archive_bundle(bundle, tmp_path / "bundle.tar.gz")
    manifest = verify_bundle(archive, trust_store=trust_store, require_signature=True)
    assert manifest["name"] == "apples"
    release_unpacked(manifest)  # the caller's to remove, as the docstring says


@pytest.mark.parametrize(
    "planted",
    [
        "notes.txt",
        "runtime/visionline/export/runtime.py",
        "__pycache__/model.cpython-311.pyc",
        "reference/__pycache__/scores.cpython-311.pyc",
    ],
)
def test_any_file_the_manifest_does_not_list_is_refused(bundle, trust_store, planted):
    (bundle / planted).parent.mkdir(parents=True, exist_ok=True)
    (bundle / planted).write_bytes(b"def load_bundle(*a, **k): return 'always valid'\n")
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(bundle, trust_store=trust_store)
    assert planted in _one_sentence(exc) and "does not list" in str(exc.value)
    with pytest.raises(IntegrityError, match="does not list"):
        verify_bundle(bundle)  # without keys too


def test_an_empty_planted_folder_and_a_symlink_are_refused(bundle, tmp_path):
    (bundle / "__pycache__").mkdir()
    with pytest.raises(IntegrityError, match="__pycache__"):
        verify_bundle(bundle)
    (bundle / "__pycache__").rmdir()
    (tmp_path / "outside.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    (bundle / "model.onnx").unlink()
    os.symlink(tmp_path / "outside.onnx", bundle / "model.onnx")
    with pytest.raises(IntegrityError, match="model.onnx, which is a symlink"):
        verify_bundle(bundle)


def test_a_listed_runtime_module_without_a_new_signature_is_refused(bundle, trust_store):
    """An attacker adds code and lists it in bundle.json: the signature no longer matches."""
    module = bundle / "runtime" / "visionline" / "export" / "runtime.py"
    module.parent.mkdir(parents=True)
    module.write_text("VALID = True\n")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"]["runtime/visionline/export/runtime.py"] = {
        "sha256": __import__("hashlib").sha256(module.read_bytes()).hexdigest()
    }
    (bundle / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    assert verify_bundle(bundle)["_signed_by"] is None  # the hashes alone cannot tell
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(bundle, trust_store=trust_store)
    assert "bundle.json" in _one_sentence(exc) and "changed after key" in str(exc.value)


def test_a_changed_model_is_refused(bundle, trust_store):
    with (bundle / "model.onnx").open("r+b") as handle:
        handle.seek(40)
        byte = handle.read(1)
        handle.seek(40)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(bundle, trust_store=trust_store)
    assert "model.onnx" in _one_sentence(exc) and "sha256 mismatch" in str(exc.value)


def test_a_missing_file_is_refused(bundle):
    (bundle / "reference" / "scores.npy").unlink()
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(bundle)
    assert "missing reference/scores.npy" in _one_sentence(exc)


def test_a_changed_threshold_in_bundle_json_is_refused(bundle, trust_store, keys):
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["threshold"] = 0.99
    (bundle / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(bundle, trust_store=trust_store)
    message = _one_sentence(exc)
    assert "bundle.json" in message and key_id(read_public_key(keys[1])) in message


def test_a_valid_signature_from_an_untrusted_key_is_refused(bundle, trust_store, tmp_path):
    """An attacker re-signs a changed bundle with their own key: valid signature, wrong signer."""
    from visionline.export import generate_keys

    attacker, attacker_pub = generate_keys(tmp_path / "attacker")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["threshold"] = 0.99
    finalize_bundle(bundle, {k: v for k, v in manifest.items() if k != "files"}, attacker)
    assert verify_bundle(bundle, attacker_pub)["threshold"] == 0.99
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(bundle, trust_store=trust_store)
    message = _one_sentence(exc)
    assert key_id(read_public_key(attacker_pub)) in message and "does not trust" in message


def test_require_signature_refuses_unsigned_bundles_and_runs_without_keys(tmp_path, trust_store):
    unsigned = make_bundle(tmp_path / "unsigned")
    assert verify_bundle(unsigned)["_signed_by"] is None
    with pytest.raises(IntegrityError) as exc:
        verify_bundle(unsigned, trust_store=trust_store, require_signature=True)
    assert "not signed" in _one_sentence(exc)
    with pytest.raises(ConfigError, match="--trust-store DIR or --pubkey FILE"):
        verify_bundle(unsigned, require_signature=True)


def test_a_garbled_signature_file_is_refused(bundle, trust_store):
    (bundle / "bundle.sig").write_text('{"algorithm": "ed25519", "signature": "bm9wZQ=="}')
    with pytest.raises(IntegrityError, match="bundle.sig .* is unreadable"):
        verify_bundle(bundle, trust_store=trust_store)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "a/./b", "bundle.sig"])
def test_unsafe_names_in_the_manifest_are_refused(bundle, name):
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"][name] = {"sha256": "0" * 64}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="unsafe path"):
        verify_bundle(bundle)


def test_an_old_format_bundle_is_refused_with_the_fix(bundle):
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["format"] = "visionline.bundle/1"
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="visionline.bundle/1 bundle .* export it again"):
        verify_bundle(bundle)


def test_a_missing_bundle_or_manifest_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="No bundle at"):
        verify_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="has no bundle.json"):
        verify_bundle(tmp_path / "empty")


def test_a_copy_keeps_verifying(signed_bundle, trust_store, tmp_path):
    copy = shutil.copytree(signed_bundle, tmp_path / "elsewhere" / "apples" / "1")
    assert verify_bundle(copy, trust_store=trust_store)["version"] == "1"


def test_an_archive_is_unpacked_privately_and_a_refused_one_leaves_nothing(
    bundle, tmp_path, private_tempdir
):
    manifest = verify_bundle(archive_bundle(bundle, tmp_path / "good.tar.gz"))
    unpacked = Path(manifest["_unpacked"])
    assert unpacked.parent == private_tempdir and Path(manifest["_root"]).is_relative_to(unpacked)
    release_unpacked(manifest)
    release_unpacked(manifest)  # a second release finds nothing to do
    assert not unpacked.exists() and manifest["_unpacked"] is None
    (bundle / "planted.py").write_text("x = 1\n")
    with pytest.raises(IntegrityError, match="planted.py"):
        verify_bundle(archive_bundle(bundle, tmp_path / "bad.tar.gz"))
    assert list(private_tempdir.iterdir()) == []
