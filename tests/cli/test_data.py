"""`visionline data` as a user runs it: real subprocesses, one-line errors, data left intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_one_line_error, run_visionline
from PIL import Image


def run(*args: str, cwd: Path):
    return run_visionline("data", *args, cwd=cwd, timeout=120)


YAML = """
name: tiles
classes:
- name: good
- name: defect
  subtypes: [blowhole, crack]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "visionline.yaml").write_text(YAML)
    rng = np.random.default_rng(0)
    for folder, count in (("ok", 4), ("crack", 3)):
        for i in range(count):
            (tmp_path / "images" / folder).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((32, 32)).save(tmp_path / "images" / folder / f"{i}.jpg")
    (tmp_path / "images" / "ok" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return tmp_path


def _version_ids(project: Path) -> list[str]:
    from visionline.config import Project
    from visionline.data import DatasetRepo

    return [v.id for v in DatasetRepo(Project.load(project)).list()]


@pytest.mark.slow
def test_data_lifecycle(project: Path, tmp_path: Path):
    added = run("add", "images", "--map", "ok=good", "--name", "first", cwd=project)
    assert added.returncode == 0, added.stderr
    assert "ok/broken.jpg: not an image" in added.stdout
    assert "Created version" in added.stdout
    (vid,) = _version_ids(project)
    assert vid[:12] in added.stdout

    listed = run("list", cwd=project)
    assert vid[:12] in listed.stdout and "first" in listed.stdout

    shown = run("show", vid[:8], "-p", str(project), cwd=tmp_path.parent)
    assert shown.returncode == 0, shown.stderr
    assert vid in shown.stdout and "good" in shown.stdout and "skipped 1" in shown.stdout

    split = run("split", vid[:8], "--val", "0.25", "--test", "0.25", "--seed", "1", cwd=project)
    assert split.returncode == 0, split.stderr
    child = next(i for i in _version_ids(project) if i != vid)
    assert child[:12] in split.stdout

    diff = run("diff", vid[:8], child[:8], cwd=project)
    assert "7 moved between splits" in diff.stdout and "+0 added" in diff.stdout

    out = tmp_path / "exported"
    exported = run("export", child[:8], str(out), cwd=project)
    assert exported.returncode == 0, exported.stderr
    assert len(list(out.rglob("*.jpg"))) == 7

    verified = run("verify", child[:8], cwd=project)
    assert verified.returncode == 0 and "OK" in verified.stdout


def test_verify_fails_on_a_corrupted_blob(project: Path):
    run("add", "images", "--map", "ok=good", cwd=project)
    blob = next(p for p in (project / ".visionline" / "store").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    (vid,) = _version_ids(project)
    result = run("verify", vid[:8], cwd=project)
    assert "corrupt" in result.stdout
    assert_one_line_error(result, "1 corrupt", "re-add")


@pytest.mark.slow
def test_bad_input_gives_one_line_and_keeps_data(project: Path):
    assert run("add", "images", "--map", "ok=good", cwd=project).returncode == 0
    before = _version_ids(project)
    index = (project / ".visionline" / "datasets" / "index.json").read_text()

    assert_one_line_error(
        run("show", "deadbeef", cwd=project), "No dataset version 'deadbeef'", "data list"
    )
    assert_one_line_error(run("add", "nowhere", cwd=project), "does not exist")
    assert_one_line_error(run("add", "images", cwd=project), "Folder 'ok'", "--map ok=")
    assert_one_line_error(run("add", "images", "--map", "ok", cwd=project), "FOLDER=LABEL")
    assert_one_line_error(run("add", "images", "--map", "ok=apple", cwd=project), "not a class")
    assert_one_line_error(run("split", before[0][:8], "--val", "0.9", cwd=project), "sum below 1")
    assert_one_line_error(run("diff", before[0][:8], "cafe", cwd=project), "No dataset version")
    elsewhere = project.parent / f"{project.name}-no-project"
    elsewhere.mkdir()
    assert_one_line_error(run("list", "-p", str(elsewhere), cwd=elsewhere), "visionline init")

    assert _version_ids(project) == before
    assert (project / ".visionline" / "datasets" / "index.json").read_text() == index


@pytest.mark.slow
def test_split_group_by_reports_the_groups_and_refuses_bad_keys(project: Path):
    assert run("add", "images", "--map", "ok=good", cwd=project).returncode == 0
    (vid,) = _version_ids(project)
    done = run(
        "split",
        vid[:8],
        "--val",
        "0.25",
        "--test",
        "0.25",
        "--group-by",
        r"regex:^(\w+/\d)",
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert r"groups by regex:^(\w+/\d): 7, shared between splits: 0 (leak rate 0%)" in text
    assert_one_line_error(
        run("split", vid[:8], "--group-by", r"regex:tile(\d+)", cwd=project),
        r"'regex:tile(\d+)' finds no group key in 7 of 7 paths, e.g.",
    )
    assert_one_line_error(
        run("split", vid[:8], "--group-by", r"regex:^(\w+)/", cwd=project),
        "has no images in the val split",
    )


@pytest.mark.slow
def test_split_calib_adds_a_threshold_split_that_show_lists(tmp_path: Path):
    (tmp_path / "visionline.yaml").write_text(YAML)
    rng = np.random.default_rng(1)
    for folder in ("ok", "crack"):
        (tmp_path / "images" / folder).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((32, 32)).save(tmp_path / "images" / folder / f"{i}.jpg")
    assert run("add", "images", "--map", "ok=good", cwd=tmp_path).returncode == 0
    (vid,) = _version_ids(tmp_path)
    done = run("split", vid[:8], "--val", "0.25", "--calib", "0.25", "--test", "0.25", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train 4, val 4, calib 4, test 4" in done.stdout
    child = next(i for i in _version_ids(tmp_path) if i != vid)
    shown = " ".join(run("show", child[:8], cwd=tmp_path).stdout.split())
    assert "split: val 0.25, calib 0.25, test 0.25" in shown
    assert_one_line_error(
        run("split", vid[:8], "--val", "0.3", "--calib", "0.4", "--test", "0.3", cwd=tmp_path),
        "calib=0.4",
    )


def test_dedupe_lists_groups_and_writes_a_contact_sheet(tmp_path: Path):
    from sklearn.datasets import load_sample_image

    (tmp_path / "visionline.yaml").write_text(YAML)
    photo = Image.fromarray(load_sample_image("china.jpg"))
    source = photo.crop((40, 40, 300, 300)).resize((160, 160))
    for i, angle in enumerate((0, 90, 143, 260)):
        copy = source.rotate(angle, expand=True, fillcolor=(90, 90, 90))
        (tmp_path / "images" / "ok").mkdir(parents=True, exist_ok=True)
        copy.save(tmp_path / "images" / "ok" / f"copy{i}.jpg", quality=85)
    (tmp_path / "images" / "crack").mkdir(parents=True)
    photo.crop((330, 150, 590, 410)).save(tmp_path / "images" / "crack" / "other.jpg")
    assert run("add", "images", "--map", "ok=good", cwd=tmp_path).returncode == 0
    (vid,) = _version_ids(tmp_path)
    done = run("dedupe", vid[:8], "--out", "dd", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "1 groups, 4 of 5 images" in text and "ok/copy0.jpg" in text
    assert Image.open(tmp_path / "dd" / "near-duplicates.png").size[1] > 96
    assert "ok/copy3.jpg" in (tmp_path / "dd" / "near-duplicates.html").read_text()
    assert_one_line_error(
        run("dedupe", vid[:8], "--max-group-share", "0", cwd=tmp_path), "must be in (0, 1]"
    )
