"""`visionline-edge verify|score`: what a device operator runs; errors are one line and exit non-zero."""

from __future__ import annotations

import json

from edge_support import make_bundle, png

from visionline_edge.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_reports_the_trusted_signer(capsys, bundle, trust_store):
    code, out, err = _run(capsys, "verify", bundle, "--trust-store", trust_store)
    assert code == 0 and err == ""
    assert out.startswith("OK apples v1: 2 files match bundle.json, signed by trusted key ")


def test_verify_refuses_a_tampered_bundle_in_one_line(capsys, bundle, trust_store):
    (bundle / "__pycache__").mkdir()
    (bundle / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00")
    code, out, err = _run(capsys, "verify", bundle, "--trust-store", trust_store)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "__pycache__/x.cpython-311.pyc" in err


def test_keys_are_required_unless_unsigned_is_allowed_on_purpose(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("VISIONLINE_TRUST_STORE", raising=False)
    unsigned = make_bundle(tmp_path / "unsigned")
    code, _, err = _run(capsys, "verify", unsigned)
    assert code == 2 and "--allow-unsigned" in err
    code, out, _ = _run(capsys, "verify", unsigned, "--allow-unsigned")
    assert code == 0 and "UNSIGNED (hashes only)" in out


def test_the_trust_store_can_come_from_the_environment(capsys, tmp_path, trust_store, monkeypatch):
    monkeypatch.setenv("VISIONLINE_TRUST_STORE", str(trust_store))
    code, _, err = _run(capsys, "verify", make_bundle(tmp_path / "unsigned"))
    assert code == 1 and "is not signed" in err


def test_score_prints_one_row_per_image_and_error_rows(capsys, bundle, keys, tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(png((250, 250, 250)))
    (images / "sub" / "b.png").write_bytes(png((15, 15, 15)))
    (images / "broken.jpg").write_bytes(b"not an image")
    code, out, err = _run(
        capsys, "score", bundle, images, "--pubkey", keys[1], "--json", "--batch-size", "2"
    )
    assert code == 0
    rows = {
        json.loads(line)["image"].rsplit("/", 1)[1]: json.loads(line) for line in out.splitlines()
    }
    assert rows["a.png"]["decision"] == "good" and rows["b.png"]["decision"] == "defect"
    assert "cannot be decoded" in rows["broken.jpg"]["error"]
    assert "3 images, 1 flagged, 1 unreadable" in err
    code, out, _ = _run(capsys, "score", bundle, images / "a.png", "--pubkey", keys[1])
    assert code == 0 and out.split("\t")[1] == "good"


def test_score_refuses_before_running_anything_from_a_tampered_bundle(
    capsys, bundle, keys, tmp_path
):
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["threshold"] = 1.0
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    (tmp_path / "a.png").write_bytes(png((15, 15, 15)))
    code, out, err = _run(capsys, "score", bundle, tmp_path / "a.png", "--pubkey", keys[1])
    assert code == 1 and out == "" and "bundle.json" in err and "changed after key" in err
    code, _, err = _run(capsys, "score", bundle, tmp_path / "nope.png", "--pubkey", keys[1])
    assert code == 2 and "No image or folder at" in err


def test_an_archive_leaves_no_unpacked_copy_behind(capsys, bundle, keys, tmp_path, private_tempdir):
    from visionline.export._bundle import archive_bundle

    archive = archive_bundle(bundle, tmp_path / "apples.tar.gz")
    (tmp_path / "a.png").write_bytes(png((250, 250, 250)))
    assert _run(capsys, "verify", archive, "--pubkey", keys[1])[0] == 0
    assert _run(capsys, "score", archive, tmp_path / "a.png", "--pubkey", keys[1])[0] == 0
    assert list(private_tempdir.iterdir()) == []
