"""The real magnetic-tile dataset (1,344 photos nobody here made): ingest, masks, split, verify."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from visionline.data import DatasetRepo

MAGNETIC_TILES = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "magnetic-tile-defect"
)

pytestmark = pytest.mark.skipif(
    not MAGNETIC_TILES.is_dir(), reason=f"magnetic-tile dataset not found at {MAGNETIC_TILES}"
)

TILE_YAML = """
name: tiles
classes:
- name: good
- name: defect
  subtypes: [blowhole, break, crack, fray, uneven]
"""

MAPPING = {"MT_Free": "good"} | {
    f"MT_{name}": f"defect/{name.lower()}"
    for name in ("Blowhole", "Break", "Crack", "Fray", "Uneven")
}


@pytest.mark.slow
def test_magnetic_tiles_ingest_split_verify(tmp_path):
    from visionline.config import Project, dump_config, parse_config

    (tmp_path / "visionline.yaml").write_text(dump_config(parse_config(TILE_YAML)))
    repo = DatasetRepo(Project.load(tmp_path))
    report = repo.add(MAGNETIC_TILES, label_map=MAPPING, masks=True)
    v = report.version
    assert report.scanned == 1344 and not report.skipped and not report.conflicts
    assert len(report.duplicates) == 0  # checked: all 1,344 photos are distinct files
    assert v.n_images == 1344
    assert Counter(r.label for r in v.records) == {"good": 952, "defect": 392}
    assert v.class_counts() == {
        "good": 952,
        "blowhole": 115,
        "break": 85,
        "crack": 57,
        "fray": 32,
        "uneven": 103,
    }
    assert all(r.mask_sha256 for r in v.records) and all(r.mode == "L" for r in v.records)
    assert not any(r.path.endswith(".png") for r in v.records)
    assert len(report.near_duplicates) > 0  # consecutive frames of one tile

    split = repo.split(v.short_id, val=0.15, test=0.15, seed=0)
    counts = split.split_counts()
    assert sum(counts.values()) == 1344 and counts["test"] >= 150 and counts["val"] >= 150
    for cls in ("good", "blowhole", "fray"):
        assert {r.split for r in split.records if r.model_class == cls} == {"train", "val", "test"}
    from visionline.data._phash import near_duplicate_pairs
    from visionline.data._split import record_phashes

    records = split.records
    hashes = record_phashes(repo, records)
    for i, j, _ in near_duplicate_pairs([hashes[r.sha256] for r in records], 4):
        assert records[i].split == records[j].split
    assert repo.verify(split.id).ok

    from visionline.data import SPLITS, TILE_SPEC, group_ids

    by_tile = repo.split(v.short_id, val=0.15, test=0.15, seed=0, group_by=TILE_SPEC)
    assert by_tile.metadata["split"]["groups"] == 196
    assert by_tile.metadata["split"]["groups_shared"] == 0
    tiles = group_ids([r.path for r in by_tile.records], TILE_SPEC)
    splits_of_tile: dict[str, set[str | None]] = {}
    for record, tile in zip(by_tile.records, tiles):
        splits_of_tile.setdefault(tile, set()).add(record.split)
    assert all(len(s) == 1 for s in splits_of_tile.values())
    for cls in ("good", "blowhole", "fray"):
        assert {r.split for r in by_tile.records if r.model_class == cls} == set(SPLITS) - {"calib"}
