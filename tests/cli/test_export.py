"""CLI: keys, bundle verify, export and bench; bad input gives one line, a non-zero exit, no traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "export_test_fixtures", Path(__file__).parents[1] / "export" / "conftest.py"
)
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
export_workspace = _fixtures.export_workspace  # the trained-model workspace of tests/export


def visionline(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from visionline.cli import main; main()", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert fragment in " ".join(result.stderr.split())


def test_keys_generate_and_refuse_overwrite(tmp_path) -> None:
    first = visionline("keys", "generate", "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "visionline-signing.key").stat().st_mode & 0o077 == 0
    assert (
        (tmp_path / "visionline-signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    )
    assert_one_line_error(visionline("keys", "generate", "--out", str(tmp_path)), "already exists")


def test_export_missing_model_is_one_line(tmp_path) -> None:
    assert_one_line_error(
        visionline("export", str(tmp_path / "nope.pt"), "--no-int8"), "No model file"
    )


def test_export_int8_without_data_is_one_line(tmp_path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a model")
    assert_one_line_error(
        visionline("export", str(tmp_path / "model.pt"), "--int8", "qat"), "pass --data"
    )


def test_export_int8_and_no_int8_together_is_one_line(tmp_path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a model")
    assert_one_line_error(
        visionline("export", str(tmp_path / "model.pt"), "--int8", "qat", "--no-int8"),
        "contradict each other",
    )


def test_export_bad_option_value_is_one_line(tmp_path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    assert_one_line_error(
        visionline("export", str(tmp_path / "model.pt"), "--tolerance", "3"), "tolerance"
    )


def test_verify_missing_bundle_and_bench_bad_batch(tmp_path) -> None:
    assert_one_line_error(visionline("bundle", "verify", str(tmp_path / "none")), "No bundle")
    assert_one_line_error(visionline("bench", str(tmp_path), "--batch", "1,x"), "--batch")


@pytest.mark.slow
def test_export_verify_tamper_and_bench(export_workspace, tmp_path) -> None:
    root = export_workspace["root"]
    assert visionline("keys", "generate", "--out", str(tmp_path / "keys")).returncode == 0
    out = tmp_path / "bundle"
    result = visionline(
        "export",
        str(export_workspace["model"]),
        "--data",
        export_workspace["version"].short_id,
        "--out",
        str(out),
        "--calibration",
        "minmax",
        "--calibration-images",
        "32",
        "--tolerance",
        "0.05",
        "--sign",
        str(tmp_path / "keys" / "visionline-signing.key"),
        "--triton",
        str(tmp_path / "triton"),
        "--version",
        "7",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    assert "INT8 passed on" in result.stdout and "signed" in result.stdout
    pub = str(tmp_path / "keys" / "visionline-signing.pub")
    ok = visionline("bundle", "verify", str(out.with_name("bundle.tar.gz")), "--pubkey", pub)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bench = visionline(
        "bench",
        str(out),
        "--batch",
        "1,4",
        "--runs",
        "5",
        "--json",
        str(tmp_path / "b.json"),
        "--no-gate",
        cwd=root,
    )
    assert bench.returncode == 0, bench.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert (
        set(report["backends"]) == {"onnx_fp32", "onnx_int8"}
        and report["gate"]["budget_ms"] == 20.0
    )
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["threshold"] = 0.9
    (out / "bundle.json").write_text(json.dumps(manifest))
    assert_one_line_error(visionline("bundle", "verify", str(out), "--pubkey", pub), "signature")


def test_bundle_verify_of_an_archive_leaves_no_unpacked_copy(tmp_path: Path) -> None:
    from edge_support import make_bundle

    from visionline.export import generate_keys
    from visionline.export._bundle import archive_bundle

    private, public = generate_keys(tmp_path / "keys")
    archive = archive_bundle(make_bundle(tmp_path / "b", private), tmp_path / "b.tar.gz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ok = subprocess.run(
        [sys.executable, "-c", "from visionline.cli import main; main()",
         "bundle", "verify", str(archive), "--pubkey", str(public)],
        check=False, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    assert list(scratch.iterdir()) == []
