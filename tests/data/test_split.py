"""Splits: deterministic, stratified, and near-duplicates never straddle two splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from visionline.data import DatasetRepo
from visionline.errors import ConfigError


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
        "near_duplicate_groups": a.metadata["split"]["near_duplicate_groups"],
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
