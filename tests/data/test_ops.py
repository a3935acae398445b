"""diff, export (round trip) and verify (detects a flipped byte)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from visionline.data import DatasetRepo
from visionline.errors import DataError


def test_diff_reports_added_removed_relabelled_and_resplit(repo: DatasetRepo, image_folder: Path):
    base = repo.add(image_folder).version
    records = sorted(base.records, key=lambda r: r.path)
    removed, relabelled, resplit = records[0], records[1], records[2]
    changed = [r for r in records if r not in (removed, relabelled, resplit)]
    changed += [
        replace(relabelled, label="defect", subtype="crack"),
        replace(resplit, split="test"),
    ]
    changed.append(replace(records[3], sha256="f" * 64, path="new.jpg"))
    other = repo.create_version(changed, "edited", base.id, {})
    d = repo.diff(base.short_id, other.short_id)
    assert [r.path for r in d.added] == ["new.jpg"]
    assert [r.path for r in d.removed] == [removed.path]
    assert [(a.model_class, b.model_class) for a, b in d.relabelled] == [
        (relabelled.model_class, "crack")
    ]
    assert [(a.split, b.split) for a, b in d.resplit] == [(None, "test")]
    assert repo.diff(base.id, base.id).unchanged


def test_export_round_trip(repo: DatasetRepo, image_folder: Path, tmp_path: Path):
    split = repo.split(repo.add(image_folder).version.id, val=0.25, test=0.25)
    out = tmp_path / "export"
    assert repo.export(split.short_id, out) == split.n_images
    assert {p.parent.parent.name for p in out.rglob("*.jpg")} == {"train", "val", "test"}
    again = repo.add(out).version
    key = lambda r: (r.sha256, r.label, r.subtype, r.split)
    assert sorted(map(key, again.records)) == sorted(map(key, split.records))
    with pytest.raises(DataError, match="not an empty folder"):
        repo.export(split.id, out)


def test_export_unsplit_with_masks(imgs, repo: DatasetRepo, tmp_path: Path):
    root = tmp_path / "tiles"
    imgs.write_image(root / "crack" / "a.jpg", 1)
    imgs.write_mask(root / "crack" / "a.png")
    imgs.write_image(root / "good" / "b.jpg", 2)
    v = repo.add(root, masks=True).version
    out = tmp_path / "out"
    repo.export(v.id, out, masks=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "crack/a.jpg",
        "crack/a_mask.png",
        "good/b.jpg",
    ]
    back = repo.add(out, masks=True).version
    assert {r.sha256: r.mask_sha256 for r in back.records} == {
        r.sha256: r.mask_sha256 for r in v.records
    }


def test_verify_detects_a_flipped_byte_and_a_missing_blob(repo: DatasetRepo, image_folder: Path):
    v = repo.add(image_folder).version
    assert repo.verify(v.id).ok
    first, second = sorted(v.records, key=lambda r: r.path)[:2]
    path = repo.blobs.local_path(first.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    repo.blobs.local_path(second.sha256).unlink()
    report = repo.verify(v.short_id)
    assert not report.ok
    assert report.corrupt == [first.path] and report.missing == [second.path]
    assert report.checked == v.n_images
    assert len(repo.get(v.id).records) == v.n_images  # the manifest itself is intact
