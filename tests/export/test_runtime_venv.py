"""The bundle's own runtime predicts in a clean venv holding only onnxruntime, numpy and Pillow."""

from __future__ import annotations

import subprocess
import venv

import pytest

from visionline.export import ExportConfig, export_model, generate_keys

pytestmark = pytest.mark.slow


def test_bundle_runs_in_a_bare_venv(export_workspace, tmp_path) -> None:
    private, public = generate_keys(tmp_path / "keys")
    result = export_model(
        export_workspace["model"],
        tmp_path / "bundle",
        ExportConfig(data=export_workspace["version"].id, calibration_images=16),
        export_workspace["project"],
        signing_key=private,
        progress=False,
    )
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "onnxruntime", "numpy", "pillow"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        pytest.skip(
            f"cannot install onnxruntime/numpy/pillow into a fresh venv: {install.stderr[-300:]}"
        )
    records = export_workspace["version"].split_records("val")
    image = next(r for r in records if r.label != "good")
    from visionline.data import DatasetRepo

    (tmp_path / "img.png").write_bytes(
        DatasetRepo(export_workspace["project"]).blobs.get(image.sha256)
    )
    script = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('torch') is None and importlib.util.find_spec('cryptography') is None\n"
        "from visionline.export.runtime import load_bundle\n"
        f"m = load_bundle({str(result.archive)!r}, pubkey={str(public)!r})\n"
        f"p = m.predict([open({str(tmp_path / 'img.png')!r}, 'rb').read()])\n"
        "print(p.decisions[0], round(float(p.defect_scores[0]), 6))\n"
    )
    run = subprocess.run(
        [str(python), "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(result.bundle_dir / "runtime"), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    decision, score = run.stdout.split()
    from visionline.export import load_bundle

    expected = load_bundle(result.bundle_dir).predict([(tmp_path / "img.png").read_bytes()])
    assert decision == expected.decisions[0]
    assert float(score) == pytest.approx(float(expected.defect_scores[0]), abs=1e-6)
