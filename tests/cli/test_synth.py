"""`visionline synth` as a user runs it: real subprocesses, one-line errors, nothing half-written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, run_visionline
from PIL import Image


def run(*args: str | Path, cwd: Path):
    return run_visionline("synth", *args, cwd=cwd, timeout=300)


def test_dataset_command_writes_imagefolder(tmp_path):
    result = run(
        "dataset",
        "--n",
        "12",
        "--defect-rate",
        "0.5",
        "--size",
        "48",
        "--seed",
        "3",
        "--out",
        "ds",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Wrote 12 images" in result.stdout
    out = tmp_path / "ds"
    assert len(list((out / "good").glob("*.jpg"))) == 6
    assert sum(len(list(p.glob("*.jpg"))) for p in out.iterdir() if p.is_dir()) == 12
    with Image.open(next((out / "good").glob("*.jpg"))) as image:
        assert image.size == (48, 48)
    assert json.loads((out / "synth.json").read_text())["config"]["seed"] == 3


def test_dataset_add_creates_a_dataset_version(tmp_path):
    from visionline.config import Project, init_project
    from visionline.data import DatasetRepo

    init_project(tmp_path)
    result = run(
        "dataset",
        "--n",
        "10",
        "--size",
        "40",
        "--out",
        "synth",
        "--add",
        "--name",
        "synthetic",
        "--project",
        tmp_path,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    versions = DatasetRepo(Project.load(tmp_path)).list()
    assert [v.name for v in versions] == ["synthetic"]
    records = versions[0].records
    assert len(records) == 10
    assert {r.subtype or r.label for r in records} <= {
        "good",
        "bruise",
        "rot",
        "scab",
        "cut",
        "insect_hole",
    }
    assert sum(r.label == "defect" for r in records) == 3
    assert versions[0].short_id in result.stdout


def test_dataset_add_without_project_fails_before_writing(tmp_path):
    result = run("dataset", "--n", "4", "--out", "ds", "--add", "--project", tmp_path, cwd=tmp_path)
    assert_one_line_error(result)
    assert not (tmp_path / "ds").exists()


def test_deliveries_command_with_drift(tmp_path):
    result = run(
        "deliveries",
        "--suppliers",
        "2",
        "--deliveries",
        "3",
        "--size",
        "8",
        "--image-size",
        "40",
        "--drift",
        "lighting",
        "--drift-start",
        "12",
        "--drift-ramp",
        "4",
        "--out",
        "line",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "24 images in 3 deliveries" in result.stdout
    with open(tmp_path / "line" / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24
    assert [r["drift"] for r in rows[:12]] == [""] * 12
    assert {r["drift"] for r in rows[12:]} == {"lighting"}
    assert float(rows[-1]["drift_strength"]) == 1.0


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("dataset", "--n", "5", "--size", "5000"), ("5000", "32 to 512")),
        (("dataset", "--n", "-3"), ("--n", "at least 1")),
        (("dataset", "--n", "5", "--defect-rate", "2"), ("--defect-rate",)),
        (("deliveries", "--drift", "fog"), ("fog", "dirty_lens")),
        (("deliveries", "--suppliers", "0"), ("suppliers",)),
        (("deliveries", "--size", "-1"), ("size",)),
        (("deliveries", "--image-size", "5000"), ("5000",)),
        (("deliveries", "--drift", "lighting", "--drift-ramp", "0"), ("--drift-ramp",)),
    ],
)
def test_bad_inputs_give_one_line_errors_and_write_nothing(tmp_path, args, needles):
    result = run(*args, "--out", "out", cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("data")
    result = run("dataset", "--n", "3", "--out", "out", cwd=tmp_path)
    assert_one_line_error(result, "not empty", "--force")
    result = run("dataset", "--n", "3", "--out", "out", "--force", cwd=tmp_path)
    assert_one_line_error(result, "not written by visionline synth")
    assert (tmp_path / "out" / "mine.txt").read_text() == "data"


def test_preview_writes_png(tmp_path):
    result = run("preview", "--out", "sheet.png", "--size", "32", "--columns", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.format == "PNG" and image.size[0] == 190 + 2 * 32
    assert_one_line_error(run("preview", "--out", "sheet.jpg", cwd=tmp_path), ".png")


def test_config_file_sets_camera_and_varieties_and_options_override(tmp_path):
    (tmp_path / "line.yaml").write_text(
        "size: 64\nvarieties: [green]\ncamera:\n  jpeg_quality: 70\n  noise: 0.03\n"
    )
    result = run(
        "dataset", "--n", "6", "--size", "40", "--config", "line.yaml", "--out", "ds", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "ds" / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["variety"] for r in rows} == {"green"}
    assert {r["jpeg_quality"] for r in rows} == {"70"}
    with Image.open(tmp_path / "ds" / rows[0]["file"]) as image:
        assert image.size == (40, 40)


def test_bad_config_file_is_one_line_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("camera:\n  jpeg_quality: 500\n")
    assert_one_line_error(
        run("dataset", "--config", "bad.yaml", "--out", "ds", cwd=tmp_path),
        "bad.yaml",
        "camera.jpeg_quality",
    )
    assert_one_line_error(
        run("dataset", "--config", "missing.yaml", "--out", "ds", cwd=tmp_path), "missing.yaml"
    )
    assert not (tmp_path / "ds").exists()
