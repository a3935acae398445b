"""Dataset versions: content-derived ids, immutability, prefixes, the index."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from visionline.data import DatasetRepo, ImageRecord
from visionline.data._manifest import version_id
from visionline.errors import AmbiguousIdError, DataError, NotFoundError


def _record(
    i: int, label: str = "good", subtype: str | None = None, split: str | None = None
) -> ImageRecord:
    return ImageRecord(
        sha256=f"{i:064x}",
        path=f"img{i}.jpg",
        bytes=100 + i,
        width=8,
        height=8,
        mode="RGB",
        label=label,
        subtype=subtype,
        source="test",
        split=split,
    )


RECORDS = [_record(1), _record(2, "defect", "crack"), _record(3, "defect", "blowhole", "train")]


def test_version_id_depends_on_content_and_parent_only():
    base = version_id(RECORDS, None)
    assert base == version_id(list(reversed(RECORDS)), None)
    assert base != version_id(RECORDS, "a" * 64)
    assert base != version_id([replace(RECORDS[0], label="defect")] + RECORDS[1:], None)
    assert base != version_id(RECORDS[:2], None)


def test_create_version_round_trips_and_is_idempotent(repo: DatasetRepo):
    first = repo.create_version(RECORDS, "v1", None, {"note": "hello"})
    assert len(first.id) == 64 and first.short_id == first.id[:12]
    again = repo.create_version(list(reversed(RECORDS)), "other name", None, {})
    assert again.id == first.id
    assert again.name == "v1" and again.metadata == {"note": "hello"}
    loaded = repo.get(first.id)
    assert sorted(loaded.records, key=lambda r: r.path) == sorted(RECORDS, key=lambda r: r.path)
    assert loaded.created_at == first.created_at
    assert loaded.split_records("train") == [RECORDS[2]]
    assert [v.id for v in repo.list()] == [first.id]


def test_short_prefixes_and_errors(repo: DatasetRepo):
    versions = [repo.create_version(RECORDS[:n], f"v{n}", None, {}) for n in (1, 2, 3)]
    for v in versions:
        assert repo.get(v.id[:10]).id == v.id
    with pytest.raises(NotFoundError, match="data list"):
        repo.get("ffffffff")
    with pytest.raises(NotFoundError, match="too short"):
        repo.get("a")


def test_ambiguous_prefix_names_the_fix(repo: DatasetRepo, project):
    entries = [
        {"id": "abcd" + c * 60, "name": c, "parent": None, "created_at": "2026", "n_images": 1}
        for c in "01"
    ]
    project.datasets_dir.mkdir(parents=True)
    (project.datasets_dir / "index.json").write_text(json.dumps({"versions": entries}))
    with pytest.raises(AmbiguousIdError, match="matches 2 versions; give more characters"):
        repo.get("abcd")
    assert repo.resolve("abcd0") == entries[0]["id"]


def test_parent_is_resolved_and_part_of_identity(repo: DatasetRepo):
    parent = repo.create_version(RECORDS[:1], "base", None, {})
    child = repo.create_version(RECORDS[:1], "child", parent.short_id, {})
    assert child.parent == parent.id and child.id != parent.id
    with pytest.raises(NotFoundError):
        repo.create_version(RECORDS, "orphan", "deadbeef", {})


def test_records_are_validated_against_the_project(repo: DatasetRepo):
    with pytest.raises(DataError, match="not a class of the project"):
        repo.create_version([_record(1, "bruised")], "x", None, {})
    with pytest.raises(DataError, match="not a subtype"):
        repo.create_version([_record(1, "defect", "rot")], "x", None, {})
    with pytest.raises(DataError, match="drop the subtype"):
        repo.create_version([_record(1, "good", "crack")], "x", None, {})
    with pytest.raises(DataError, match="split"):
        repo.create_version([_record(1, split="holdout")], "x", None, {})
    conflict = [_record(1), replace(_record(1, "defect", "crack"), path="other.jpg")]
    with pytest.raises(DataError, match="keep one label"):
        repo.create_version(conflict, "x", None, {})
    assert repo.list() == []


def test_exact_repeated_records_are_stored_once(repo: DatasetRepo):
    v = repo.create_version([_record(1), replace(_record(1), path="copy.jpg")], "x", None, {})
    assert v.n_images == 1 and len(repo.get(v.id).records) == 1


def test_index_is_rebuilt_from_manifests_when_deleted(repo: DatasetRepo, project):
    v = repo.create_version(RECORDS, "v1", None, {})
    index = project.datasets_dir / "index.json"
    assert json.loads(index.read_text())["versions"][0]["id"] == v.id
    index.unlink()
    assert [x.id for x in DatasetRepo(project).list()] == [v.id]
    index.write_text("{broken")
    with pytest.raises(DataError, match="delete it"):
        DatasetRepo(project).list()


def test_a_version_name_resolves_to_its_newest_version_and_ids_win(repo: DatasetRepo):
    older = repo.create_version(RECORDS[:1], "tiles", None, {})
    newer = repo.create_version(RECORDS[:2], "tiles", None, {})
    other = repo.create_version(RECORDS[:3], "v3", None, {})
    assert repo.get("tiles").id == newer.id != older.id
    assert repo.get("v3").id == other.id  # a short name works although it is no id prefix
    id_like = repo.create_version(RECORDS[1:3], older.id[:8], None, {})
    assert repo.get(older.id[:8]).id == older.id != id_like.id  # an id prefix beats a name
    with pytest.raises(NotFoundError, match="by id or name"):
        repo.get("no-such-name")
