"""Splits: deterministic, stratified, and near-duplicates never straddle two splits."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from visionline.data import DatasetRepo, split_groups
from visionline.errors import ConfigError, DataError


@pytest.fixture
def dataset(imgs, repo: DatasetRepo, tmp_path: Path):
    root = tmp_path / "ds"
    seed = 0
    for folder, count in (("good", 40), ("blowhole", 20), ("crack", 20)):
        for i in range(count):
            imgs.write_image(root / folder / f"{i}.jpg", seed)
            seed += 1
    for i in range(4):  # near-duplicates of good/0.jpg: same content, other JPEG quality
        imgs.write_image(root / "good" / f"0_q{i}.jpg", 0, quality=55 + 10 * i)
    return repo.add(root).version


def test_split_is_deterministic_and_a_child_version(repo, dataset):
    a = repo.split(dataset.short_id, val=0.2, test=0.2, seed=3)
    b = repo.split(dataset.id, val=0.2, test=0.2, seed=3)
    assert a.id == b.id and a.parent == dataset.id
    assert a.metadata["split"] == {
        "val": 0.2,
        "test": 0.2,
        "seed": 3,
        "near_duplicate_max_distance": 4,
        "near_duplicate_groups": 1,
        "group_by": "near-duplicates",
        "groups": 80,
        "groups_shared": 0,
        "near_duplicate_groups_shared": 0,
        "near_duplicate_method": "orb-affine-ransac",
        "notes": [],
        "test_images": 17,
        "test_images_with_a_near_duplicate_elsewhere": 0,
    }
    other = repo.split(dataset.id, val=0.2, test=0.2, seed=4)
    assert {r.sha256: r.split for r in other.records} != {r.sha256: r.split for r in a.records}
    assert all(r.split in ("train", "val", "test") for r in a.records)


def test_split_is_stratified(repo, dataset):
    v = repo.split(dataset.id, val=0.2, test=0.2, seed=0)
    per = Counter((r.model_class, r.split) for r in v.records)
    for cls in ("blowhole", "crack"):
        assert (per[(cls, "train")], per[(cls, "val")], per[(cls, "test")]) == (12, 4, 4)
    good = [per[("good", s)] for s in ("train", "val", "test")]
    assert sum(good) == 44 and all(abs(n - t) <= 4 for n, t in zip(good, (26.4, 8.8, 8.8)))


def test_near_duplicates_stay_in_one_split(repo, dataset):
    for seed in range(5):
        v = repo.split(dataset.id, val=0.3, test=0.3, seed=seed)
        family = {
            r.split for r in v.records if r.path == "good/0.jpg" or r.path.startswith("good/0_q")
        }
        assert len(family) == 1
        assert v.metadata["split"]["near_duplicate_groups"] >= 1


def test_split_fractions_are_validated(repo, dataset):
    with pytest.raises(ConfigError, match="sum below 1"):
        repo.split(dataset.id, val=0.6, test=0.5)
    with pytest.raises(ConfigError):
        repo.split(dataset.id, val=-0.1)


def test_split_computes_missing_phashes_from_blobs(repo, dataset, project):
    (project.datasets_dir / "phash.json").unlink()
    v = repo.split(dataset.id, val=0.3, test=0.3, seed=1)
    family = {r.split for r in v.records if r.path == "good/0.jpg" or r.path.startswith("good/0_q")}
    assert len(family) == 1
    assert (project.datasets_dir / "phash.json").is_file()


def _splits_per_key(version, key) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in version.records:
        out.setdefault(key(r.path), set()).add(r.split)
    return out


def test_group_by_keeps_every_group_in_one_split_and_stays_stratified(repo, dataset):
    # Key: folder + first digit, e.g. good/1 holds good/1, good/10..19 (11 images).
    v = repo.split(dataset.id, val=0.2, test=0.2, seed=2, group_by=r"regex:^(\w+/\d)")
    per_key = _splits_per_key(v, lambda path: path[: path.index("/") + 2])
    assert all(len(splits) == 1 for splits in per_key.values())
    assert v.metadata["split"]["group_by"] == r"regex:^(\w+/\d)"
    assert v.metadata["split"]["groups"] == len(per_key) == 30
    assert v.metadata["split"]["groups_shared"] == 0
    per = Counter((r.model_class, r.split) for r in v.records)
    for cls in ("good", "blowhole", "crack"):
        assert all(per[(cls, s)] > 0 for s in ("train", "val", "test"))


def test_a_user_key_wins_over_near_duplicate_groups(repo, dataset):
    """One group per image: the near-duplicate family of good/0.jpg may then be split, and the
    split says so instead of claiming the family was kept together."""
    shared = []
    for seed in range(6):
        v = repo.split(dataset.id, val=0.3, test=0.3, seed=seed, group_by="regex:.*")
        family = {r.split for r in v.records if r.path.startswith("good/0")}
        assert v.metadata["split"]["near_duplicate_groups_shared"] == int(len(family) > 1)
        shared.append(len(family) > 1)
    assert any(shared)


def test_group_by_errors_name_the_spec_the_path_and_the_class(repo, dataset):
    example = r" 84 of 84 paths, e\.g\. '\w+/\d+(_q\d)?\.jpg'"
    with pytest.raises(DataError, match=re.escape(r"'regex:tile\d+'") + ".*" + example):
        repo.split(dataset.id, group_by=r"regex:tile\d+")
    with pytest.raises(DataError, match="Class 'defect' has no images in the val split"):
        repo.split(dataset.id, group_by=r"regex:^(good/\d+|\w+)")
    together = repo.split(dataset.id, group_by=r"regex:^(crack|\w+/\d+)")
    assert len({r.split for r in together.records if r.subtype == "crack"}) == 1
    with pytest.raises(ConfigError, match="not one of"):
        repo.split(dataset.id, group_by="folders")


def test_split_groups_fills_any_named_splits_by_group():
    groups = [f"t{i // 6}" for i in range(120)] + [f"d{i // 6}" for i in range(36)]
    classes = ["good"] * 120 + ["defect"] * 36
    fractions = {"train": 0.55, "val": 0.15, "calibration": 0.15, "test": 0.15}
    splits = split_groups(groups, classes, fractions, seed=1)
    assert all(len({s for g, s in zip(groups, splits) if g == key}) == 1 for key in set(groups))
    per = Counter(zip(classes, splits))
    assert [per[("defect", s)] for s in fractions] == [18, 6, 6, 6]
    assert [per[("good", s)] for s in fractions] == [66, 18, 18, 18]
    assert split_groups(groups, classes, fractions, seed=1) == splits


def test_a_rare_class_inside_mixed_groups_still_reaches_every_split():
    # Four defects, each tied to two good look-alikes: by majority every group is "good", which
    # once left val without a defect; a group now counts for its rarest class.
    groups = [f"mixed{i}" for i in range(4) for _ in range(3)] + [f"g{i}" for i in range(28)]
    classes = ["defect", "good", "good"] * 4 + ["good"] * 28
    fractions = {"train": 0.55, "val": 0.15, "calib": 0.15, "test": 0.15}
    splits = split_groups(groups, classes, fractions, seed=0)
    assert {s for s, c in zip(splits, classes) if c == "defect"} == set(fractions)
    assert all(len({s for g, s in zip(groups, splits) if g == key}) == 1 for key in set(groups))


def test_calib_split_is_stratified_group_aware_and_recorded(repo, dataset):
    v = repo.split(dataset.id, val=0.2, test=0.2, seed=0, calib=0.2)
    per = Counter((r.model_class, r.split) for r in v.records)
    for cls in ("blowhole", "crack"):
        assert [per[(cls, s)] for s in ("train", "val", "calib", "test")] == [8, 4, 4, 4]
    assert all(per[("good", s)] >= 7 for s in ("train", "val", "calib", "test"))
    family = {r.split for r in v.records if r.path == "good/0.jpg" or r.path.startswith("good/0_q")}
    assert len(family) == 1
    assert v.metadata["split"]["calib"] == 0.2
    assert len(v.split_records("calib")) == sum(per[(c, "calib")] for c in ("good", "blowhole", "crack"))
    assert "calib" not in repo.split(dataset.id, val=0.2, test=0.2, seed=0).metadata["split"]
    with pytest.raises(ConfigError, match="calib=0.7"):
        repo.split(dataset.id, val=0.2, test=0.2, calib=0.7)
