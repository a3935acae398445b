"""Streams: seeded line, ImageFolder datasets and supplier deliveries with ground truth."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visionline.errors import ConfigError
from visionline.synth import (
    Drift,
    DriftConfig,
    Subtype,
    SynthConfig,
    SynthLine,
    Variety,
    generate_dataset,
    generate_deliveries,
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_line_is_deterministic_per_index_and_seed():
    line = SynthLine(SynthConfig(size=48, seed=3))
    same = SynthLine(SynthConfig(size=48, seed=3))
    other = SynthLine(SynthConfig(size=48, seed=4))
    a = line.render(17, Subtype.ROT).pixels
    assert np.array_equal(a, same.render(17, Subtype.ROT).pixels)
    assert not np.array_equal(a, other.render(17, Subtype.ROT).pixels)
    assert not np.array_equal(a, line.render(18, Subtype.ROT).pixels)


def test_drift_switches_on_at_start_and_ramps():
    drift = DriftConfig(kind=Drift.LIGHTING, start=10, ramp=20)
    assert drift.strength(9) == 0.0
    assert 0 < drift.strength(10) < drift.strength(20) < 1.0
    assert drift.strength(29) == drift.strength(500) == 1.0
    line = SynthLine(SynthConfig(size=48, drift=drift))
    assert line.spec(5, None)[0].drift is None
    spec = line.spec(40, None)[0]
    assert spec.drift is Drift.LIGHTING and spec.drift_strength == 1.0


def test_a_fixed_drift_ends_and_an_end_before_the_start_is_refused():
    drift = DriftConfig(kind=Drift.DIRTY_LENS, start=10, ramp=5, max_strength=0.6, end=30)
    assert drift.strength(29) == 0.6 and drift.strength(30) == drift.strength(500) == 0.0
    assert SynthLine(SynthConfig(size=48, drift=drift)).spec(30, None)[0].drift is None
    with pytest.raises(ValueError, match="end must come after start"):
        DriftConfig(kind=Drift.DIRTY_LENS, start=10, end=10)


def test_new_variety_appears_only_after_drift_starts():
    config = SynthConfig(size=48, drift=DriftConfig(kind=Drift.NEW_VARIETY, start=100, ramp=1))
    line = SynthLine(config)
    before = {line.spec(i, None)[0].variety for i in range(100)}
    after = [line.spec(i, None)[0].variety for i in range(100, 300)]
    assert Variety.RUSSET not in before and Variety.RUSSET not in config.varieties
    assert 0.65 < after.count(Variety.RUSSET) / len(after) < 0.95


def test_hard_defects_are_a_small_share_of_subtle_ones():
    line = SynthLine(SynthConfig(size=48, hard_fraction=0.15))
    specs = [line.spec(i, Subtype.BRUISE)[0] for i in range(1500)]
    subtle = [s for s in specs if s.severity < 1 / 3]
    hard = [s for s in specs if s.hard]
    assert all(s.severity < 1 / 3 for s in hard)
    assert 0.08 < len(hard) / len(subtle) < 0.22
    assert not any(line.spec(i, None)[0].hard for i in range(200))


def test_dataset_tree_counts_and_manifest(tmp_path):
    config = SynthConfig(size=40, seed=2, defect_rate=0.4)
    summary = generate_dataset(config, tmp_path / "ds", n=30)
    out = summary.out
    assert summary.counts["good"] == 18 and sum(summary.counts.values()) == 30
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"good", *(s.value for s in Subtype)}
    rows = read_csv(out / "manifest.csv")
    assert len(rows) == 30 == pq.read_table(out / "manifest.parquet").num_rows
    for row in rows:
        folder = Path(row["file"]).parent.name
        assert folder == (row["subtype"] or "good")
        assert row["label"] == ("good" if folder == "good" else "defect")
        with Image.open(out / row["file"]) as image:
            assert image.size == (40, 40) and image.format == "JPEG"
    per_folder = Counter(Path(r["file"]).parent.name for r in rows)
    assert dict(per_folder) == {k: v for k, v in summary.counts.items() if v}
    stored = json.loads((out / "synth.json").read_text())
    assert stored["config"]["seed"] == 2 and stored["counts"] == summary.counts


def test_dataset_is_byte_identical_for_the_same_seed(tmp_path):
    config = SynthConfig(size=40, seed=5)
    a = generate_dataset(config, tmp_path / "a", n=12).out
    b = generate_dataset(config, tmp_path / "b", n=12).out
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_output_folder_rules(tmp_path):
    config = SynthConfig(size=32)
    with pytest.raises(ConfigError, match="at least 1"):
        generate_dataset(config, tmp_path / "none", n=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(config, foreign, n=2)
    with pytest.raises(ConfigError, match="not written by visionline synth"):
        generate_dataset(config, foreign, n=2, force=True)
    assert (foreign / "precious.txt").read_text() == "keep me"
    ours = generate_dataset(config, tmp_path / "ours", n=3).out
    again = generate_dataset(config, ours, n=2, force=True)
    assert len(list(again.out.rglob("*.jpg"))) == 2


def test_deliveries_ground_truth_matches_images(tmp_path):
    config = SynthConfig(size=32, seed=1, drift=DriftConfig(kind=Drift.DIRTY_LENS, start=90))
    summary = generate_deliveries(config, tmp_path / "d", suppliers=3, deliveries=5, size=40)
    out = summary.out
    images = read_csv(out / "images.csv")
    deliveries = read_csv(out / "deliveries.csv")
    document = json.loads((out / "deliveries.json").read_text())
    assert len(images) == 200 == summary.images
    assert len(deliveries) == 5 == len(document["deliveries"])
    assert {d["supplier"] for d in deliveries} == {"S1", "S2", "S3"}
    assert [int(r["index"]) for r in images] == list(range(200))
    for row in deliveries:
        mine = [r for r in images if r["delivery"] == row["delivery"]]
        assert len(mine) == 40
        assert {r["supplier"] for r in mine} == {row["supplier"]}
        defects = [r for r in mine if r["label"] == "defect"]
        assert float(row["defect_rate"]) == pytest.approx(len(defects) / 40)
        assert 0.02 <= float(row["defect_rate"]) <= 0.25 + 1 / 40
        for subtype in Subtype:
            count = sum(1 for r in defects if r["subtype"] == subtype.value)
            assert float(row[f"rate_{subtype.value}"]) == pytest.approx(count / 40)
        for r in mine:
            assert (out / r["file"]).is_file()
    for row in images:
        strength = float(row["drift_strength"])
        assert (strength > 0) == (int(row["index"]) >= 90)
        assert (row["drift"] == "dirty_lens") == (strength > 0)
    for supplier in document["suppliers"]:
        assert 0.02 < supplier["mean_rate"] < 0.25
        assert supplier["beta_a"] > 0 and supplier["beta_b"] > 0
        assert sum(supplier["subtype_mix"].values()) == pytest.approx(1, abs=1e-3)
    assert pq.read_table(out / "deliveries.parquet").num_rows == 5


def test_delivery_rates_follow_supplier_distributions(tmp_path):
    config = SynthConfig(size=32, seed=4)
    summary = generate_deliveries(config, tmp_path / "d", suppliers=2, deliveries=2, size=5)
    rates = {s.name: s.mean_rate for s in summary.suppliers}
    assert len(set(rates.values())) == 2
    with pytest.raises(ConfigError, match="suppliers must be at least 1"):
        generate_deliveries(config, tmp_path / "e", suppliers=0)


def test_defect_masks_lie_on_their_defect_and_ingest_as_masks(tmp_path):
    from visionline.config import Project, init_project
    from visionline.data import DatasetRepo

    config = SynthConfig(size=64, seed=4, defect_rate=0.5)
    out = generate_dataset(config, tmp_path / "ds", n=10, masks=True).out
    rows = read_csv(out / "manifest.csv")
    for row in rows:
        if row["label"] == "good":
            assert row["mask"] == "" and not (out / row["file"]).with_name(
                Path(row["file"]).stem + "_mask.png"
            ).exists()
            continue
        mask = np.asarray(Image.open(out / row["mask"]))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert 0 < (mask == 255).mean() < 0.5  # the defect, not the whole apple
    init_project(tmp_path / "project")
    repo = DatasetRepo(Project.load(tmp_path / "project"))
    records = repo.add(out, masks=True).version.records
    assert len(records) == 10  # masks are stored beside their images, never as images
    assert all((r.mask_sha256 is not None) == (r.label != "good") for r in records)
