"""The device's view: the `visionline-edge` wheel, built from this repository and installed into a
fresh venv with nothing but its declared dependencies, verifies and scores an exported bundle,
and visionline itself (and torch) is not there to import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from visionline.export import ExportConfig, export_model, generate_keys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
_HOST_PYTHON = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}


def _run(*args: str | Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False,
        env={k: v for k, v in os.environ.items() if k not in _HOST_PYTHON},
    )
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_the_edge_wheel_verifies_and_scores_a_bundle_without_visionline(export_workspace, tmp_path):
    private, public = generate_keys(tmp_path / "keys")
    result = export_model(
        export_workspace["model"],
        tmp_path / "bundle",
        ExportConfig(data=export_workspace["version"].id, int8=False),
        export_workspace["project"],
        signing_key=private,
        progress=False,
    )
    store = tmp_path / "trusted-keys"
    store.mkdir()
    shutil.copyfile(public, store / "plant.pub")
    from visionline.data import DatasetRepo

    images = tmp_path / "images"
    images.mkdir()
    blobs = DatasetRepo(export_workspace["project"]).blobs
    records = export_workspace["version"].split_records("val")[:4]
    for i, record in enumerate(records):
        (images / f"{i}.png").write_bytes(blobs.get(record.sha256))

    source = tmp_path / "source"  # a copy, so the build leaves no files in the working tree
    shutil.copytree(ROOT / "edge", source / "edge")
    shutil.copytree(ROOT / "src" / "visionline_edge", source / "src" / "visionline_edge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source / "edge")
    wheel = next((tmp_path / "dist").glob("visionline_edge-*.whl"))
    env_dir = tmp_path / "device"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python, edge = env_dir / "bin" / "python", env_dir / "bin" / "visionline-edge"
    _run(python, "-m", "pip", "install", "-q", wheel)

    installed = {
        row["name"].lower()
        for row in json.loads(_run(python, "-m", "pip", "list", "--format", "json").stdout)
    }
    assert {"visionline-edge", "numpy", "pillow", "onnxruntime", "cryptography"} <= installed
    assert not installed & {"visionline", "torch", "timm", "mlflow", "typer"}
    probe = _run(python, "-c", "import visionline", check=False)
    assert probe.returncode != 0 and "No module named 'visionline'" in probe.stderr

    verified = _run(edge, "verify", result.archive, "--trust-store", store)
    assert verified.stdout.startswith(f"OK {result.manifest['name']} ")
    assert "signed by trusted key" in verified.stdout
    scored = _run(edge, "score", result.bundle_dir, images, "--trust-store", store, "--json")
    rows = sorted((json.loads(line) for line in scored.stdout.splitlines()), key=lambda r: r["image"])

    from visionline_edge import load_bundle

    expected = load_bundle(result.bundle_dir, public).predict(
        [(images / f"{i}.png").read_bytes() for i in range(len(records))]
    )
    assert [r["decision"] for r in rows] == expected.decisions
    assert [r["defect_score"] for r in rows] == pytest.approx(
        [float(s) for s in expected.defect_scores], abs=1e-5
    )

    (result.bundle_dir / "runtime").mkdir()
    (result.bundle_dir / "runtime" / "sitecustomize.py").write_text("print('pwned')\n")
    refused = _run(edge, "verify", result.bundle_dir, "--trust-store", store, check=False)
    assert refused.returncode == 1 and "runtime/sitecustomize.py" in refused.stderr
