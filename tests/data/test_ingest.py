"""Ingest from each source, with validation that never crashes on a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from visionline.data import DatasetRepo
from visionline.errors import ConfigError, DataError


def _classes(version) -> dict[str, int]:
    return dict(version.class_counts())


def test_imagefolder_labels_by_folder_name(repo: DatasetRepo, image_folder: Path):
    report = repo.add(image_folder)
    v = report.version
    assert report.created and report.source_kind == "imagefolder"
    assert _classes(v) == {"good": 6, "blowhole": 4, "crack": 3}
    record = next(r for r in v.records if r.path == "crack/crack_0.jpg")
    assert (record.label, record.subtype, record.split) == ("defect", "crack", None)
    assert (record.width, record.height, record.mode) == (48, 48, "RGB")
    assert repo.blobs.get(record.sha256) == (image_folder / "crack" / "crack_0.jpg").read_bytes()
    assert v.metadata["validation"]["counts"] == {"good": 6, "blowhole": 4, "crack": 3}
    assert v.metadata["labels"]["provenance"] == "imagefolder"
    assert not report.skipped and not report.duplicates and not report.conflicts


def test_adding_the_same_content_twice_returns_the_existing_version(repo, image_folder):
    first = repo.add(image_folder)
    second = repo.add(image_folder, name="again")
    assert not second.created and second.version.id == first.version.id
    assert len(repo.list()) == 1


def test_ultralytics_split_folders_are_honoured(imgs, repo, tmp_path):
    root = tmp_path / "ds"
    imgs.write_image(root / "train" / "good" / "a.jpg", 1)
    imgs.write_image(root / "train" / "crack" / "b.jpg", 2)
    imgs.write_image(root / "val" / "good" / "c.jpg", 3)
    imgs.write_image(root / "test" / "blowhole" / "d.jpg", 4)
    v = repo.add(root).version
    assert {r.path: r.split for r in v.records} == {
        "train/good/a.jpg": "train",
        "train/crack/b.jpg": "train",
        "val/good/c.jpg": "val",
        "test/blowhole/d.jpg": "test",
    }
    assert [r.path for r in v.split_records("val")] == ["val/good/c.jpg"]


def test_label_map_and_unknown_folder_error(imgs, repo, tmp_path):
    root = tmp_path / "ds"
    imgs.write_image(root / "OK" / "a.jpg", 1)
    imgs.write_image(root / "holes" / "b.jpg", 2)
    with pytest.raises(
        ConfigError, match="Folder 'OK' is not a class of the project; map it with --map OK="
    ):
        repo.add(root)
    with pytest.raises(ConfigError, match="'defect/rot' is not a class"):
        repo.add(root, label_map={"OK": "good", "holes": "defect/rot"})
    v = repo.add(root, label_map={"OK": "good", "holes": "defect/blowhole"}).version
    assert {r.path: (r.label, r.subtype) for r in v.records} == {
        "OK/a.jpg": ("good", None),
        "holes/b.jpg": ("defect", "blowhole"),
    }
    assert v.metadata["labels"]["label_map"] == {"OK": "good", "holes": "defect/blowhole"}
    assert [x.id for x in repo.list()] == [v.id]


def test_csv_source_resolves_paths_against_its_folder(imgs, repo, tmp_path):
    folder = tmp_path / "csvdata"
    imgs.write_image(folder / "img" / "a.jpg", 1)
    imgs.write_image(folder / "img" / "b.jpg", 2)
    imgs.write_image(folder / "img" / "c.jpg", 3)
    (folder / "labels.csv").write_text(
        "path,label,subtype\nimg/a.jpg,good,\nimg/b.jpg,defect,crack\nimg/c.jpg,defect,\nimg/missing.jpg,good,\n"
    )
    report = repo.add(folder / "labels.csv")
    assert report.source_kind == "csv"
    assert {r.path: (r.label, r.subtype) for r in report.version.records} == {
        "img/a.jpg": ("good", None),
        "img/b.jpg": ("defect", "crack"),
        "img/c.jpg": ("defect", None),
    }
    assert report.skipped == [("img/missing.jpg", "file not found")]


def test_csv_without_header_and_bad_rows(imgs, repo, tmp_path):
    imgs.write_image(tmp_path / "a.jpg", 1)
    (tmp_path / "plain.csv").write_text("a.jpg,blowhole\n")
    v = repo.add(tmp_path / "plain.csv").version
    assert [(r.label, r.subtype) for r in v.records] == [("defect", "blowhole")]
    (tmp_path / "bad.csv").write_text("a.jpg,good,crack\n")
    with pytest.raises(ConfigError, match="Subtype 'crack' does not belong to label 'good'"):
        repo.add(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(DataError, match="has no rows"):
        repo.add(tmp_path / "empty.csv")


def test_labelstudio_export_source(imgs, repo, tmp_path):
    imgs.write_image(tmp_path / "files" / "a.jpg", 1)
    imgs.write_image(tmp_path / "files" / "b.jpg", 2)
    stored_sha = repo.blobs.put(imgs.jpeg_bytes(3))

    def task(i, image, choice):
        result = [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]
        return {
            "id": i,
            "data": {"image": image},
            "annotations": [
                {"id": i, "result": result, "was_cancelled": False, "ground_truth": False}
            ],
        }

    tasks = [
        task(1, "/data/local-files/?d=files/a.jpg", "good"),
        task(2, "files/b.jpg", "crack"),
        task(3, f"blob:{stored_sha}", "blowhole"),
        task(4, "https://example.com/remote.jpg", "good"),
        task(5, "files/c.jpg", "scratch"),
        task(6, "https://example.com/known.jpg", "crack"),
    ]
    known_sha = repo.blobs.put(imgs.jpeg_bytes(4))
    tasks[-1]["data"]["sha256"] = known_sha
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    report = repo.add(export)
    assert report.source_kind == "labelstudio"
    got = {r.sha256: (r.label, r.subtype) for r in report.version.records}
    assert got[stored_sha] == ("defect", "blowhole")
    assert got[known_sha] == ("defect", "crack")  # remote URL, but the blob is in the store
    assert len(got) == 4
    reasons = " ".join(reason for _, reason in report.skipped)
    assert "not a local file" in reasons and "scratch" in reasons


def test_bad_files_are_skipped_with_reasons(imgs, repo, tmp_path):
    root = tmp_path / "ds"
    good = imgs.write_image(root / "good" / "ok.jpg", 1)
    (root / "good" / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (root / "good" / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    bomb = root / "crack" / "bomb.png"
    bomb.parent.mkdir()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    assert bomb.stat().st_size < 1_000_000
    imgs.write_image(root / "crack" / "real.jpg", 2)
    (root / "good" / "notes.txt").write_text("ignored")
    report = repo.add(root)
    reasons = dict(report.skipped)
    assert reasons["good/truncated.jpg"] == "truncated image"
    assert reasons["good/garbage.jpg"] == "not an image"
    assert reasons["crack/bomb.png"] == "decompression bomb (too many pixels)"
    assert sorted(r.path for r in report.version.records) == ["crack/real.jpg", "good/ok.jpg"]
    assert report.version.metadata["validation"]["skipped"] == 3


def test_duplicates_near_duplicates_and_conflicts(imgs, repo, tmp_path):
    root = tmp_path / "ds"
    original = imgs.write_image(root / "good" / "a.jpg", 1)
    (root / "good" / "a_copy.jpg").write_bytes(original.read_bytes())
    imgs.write_image(root / "good" / "a_requality.jpg", 1, quality=60)
    imgs.write_image(root / "good" / "b.jpg", 2)
    clash = imgs.write_image(root / "good" / "c.jpg", 3)
    (root / "crack").mkdir()
    (root / "crack" / "c_again.jpg").write_bytes(clash.read_bytes())
    report = repo.add(root)
    assert report.duplicates == [("good/a_copy.jpg", "good/a.jpg")]
    assert [(a, b) for a, b, _ in report.near_duplicates] == [
        ("good/a.jpg", "good/a_requality.jpg")
    ]
    assert len(report.conflicts) == 1 and "crack/c_again.jpg=defect/crack" in report.conflicts[0][1]
    assert sorted(r.path for r in report.version.records) == [
        "good/a.jpg",
        "good/a_requality.jpg",
        "good/b.jpg",
    ]
    assert any("crack" in note for note in report.notes)  # crack has no images left


def test_masks_are_attached_not_ingested(imgs, repo, tmp_path):
    root = tmp_path / "tiles"
    imgs.write_image(root / "MT_Crack" / "Imgs" / "x1.jpg", 1)
    imgs.write_mask(root / "MT_Crack" / "Imgs" / "x1.png")
    imgs.write_image(root / "MT_Free" / "Imgs" / "x2.jpg", 2)
    imgs.write_mask(root / "MT_Free" / "Imgs" / "x2_mask.png")
    imgs.write_image(root / "MT_Free" / "Imgs" / "x3.jpg", 3)
    imgs.write_mask(root / "MT_Free" / "Imgs" / "x3.png", size=20)
    mapping = {"MT_Crack": "defect/crack", "MT_Free": "good"}
    plain = repo.add(root, label_map=mapping)
    assert "MT_Free/Imgs/x3.png" in {r.path for r in plain.version.records}
    assert "--masks" in plain.notes[0]
    report = repo.add(root, label_map=mapping, masks=True)
    records = {r.path: r for r in report.version.records}
    assert sorted(records) == ["MT_Crack/Imgs/x1.jpg", "MT_Free/Imgs/x2.jpg", "MT_Free/Imgs/x3.jpg"]
    mask_bytes = (root / "MT_Crack" / "Imgs" / "x1.png").read_bytes()
    assert repo.blobs.get(records["MT_Crack/Imgs/x1.jpg"].mask_sha256) == mask_bytes
    assert records["MT_Free/Imgs/x2.jpg"].mask_sha256 is not None
    assert records["MT_Free/Imgs/x3.jpg"].mask_sha256 is None
    assert any("mask left out" in reason for _, reason in report.skipped)


def test_parent_extends_the_parent_version(imgs, repo, image_folder, tmp_path):
    base = repo.add(image_folder).version
    extra = tmp_path / "extra"
    imgs.write_image(extra / "good" / "new.jpg", 99)
    (extra / "good" / "again.jpg").write_bytes((image_folder / "good" / "good_0.jpg").read_bytes())
    (extra / "crack").mkdir()
    (extra / "crack" / "relabel.jpg").write_bytes(
        (image_folder / "good" / "good_1.jpg").read_bytes()
    )
    report = repo.add(extra, parent=base.short_id)
    v = report.version
    assert v.parent == base.id and v.n_images == base.n_images + 1
    assert report.duplicates == [("good/again.jpg", "good/good_0.jpg")]
    assert len(report.conflicts) == 1 and "(parent, kept)" in report.conflicts[0][1]


def test_source_errors_are_clear(repo, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        repo.add(tmp_path / "nope")
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(DataError, match="neither a folder"):
        repo.add(tmp_path / "labels.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        repo.add(tmp_path / "empty")
    (tmp_path / "bad" / "good").mkdir(parents=True)
    (tmp_path / "bad" / "good" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="No usable images"):
        repo.add(tmp_path / "bad")
    assert repo.list() == []
