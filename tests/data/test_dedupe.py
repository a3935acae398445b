"""Near-duplicate detection: rotated/flipped/cropped/relit copies join, other images do not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_image

from visionline.data import DatasetRepo
from visionline.data._dedupe import DedupeConfig, _group, find_groups
from visionline.data._dedupe_features import ImageTooSmall, concat, image_features
from visionline.data._dedupe_store import near_duplicate_report
from visionline.errors import DataError


def _crop(name: str, box: tuple[int, int, int, int]) -> Image.Image:
    return Image.fromarray(load_sample_image(name)).crop(box).resize((192, 192))


def _copy(image: Image.Image, angle: float, flip: bool, keep: float, light: float) -> Image.Image:
    out = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image
    out = out.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=(90, 90, 90))
    w, h = out.size
    margin_w, margin_h = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    out = out.crop((margin_w, margin_h, w - margin_w, h - margin_h)).resize((192, 192))
    out = ImageEnhance.Brightness(out).enhance(light)
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """A source, four transformed copies of it, and three other images (two from one photo)."""
    source = _crop("china.jpg", (40, 40, 300, 300))
    copies = [
        _copy(source, 37, False, 1.0, 1.0),
        _copy(source, 200, True, 0.75, 1.3),
        _copy(source, 95, False, 0.8, 0.7),
        _copy(source, 310, True, 0.9, 1.1),
    ]
    others = [
        _crop("china.jpg", (330, 150, 590, 410)),
        _crop("flower.jpg", (20, 20, 220, 220)),
        _crop("flower.jpg", (400, 200, 600, 400)),
    ]
    return [source, *copies, *others]


def test_copies_under_rotation_flip_crop_and_light_form_one_group(images) -> None:
    result = find_groups(concat([image_features(im) for im in images]))
    assert len(set(result.group[:5])) == 1
    assert len({result.group[0], *result.group[5:]}) == 4
    assert result.groups() == [[0, 1, 2, 3, 4]]


def test_an_image_too_small_to_compare_is_named() -> None:
    with pytest.raises(ImageTooSmall, match=r"tiny.png is 40x30 px, too small .* at least 48 px"):
        image_features(Image.new("RGB", (40, 30)), "tiny.png")


def test_one_pair_does_not_chain_two_groups() -> None:
    triangle = [(0, 1, 50), (0, 2, 50), (1, 2, 50)]
    other = [(3, 4, 50), (3, 5, 50), (4, 5, 50)]
    groups = _group(7, [*triangle, *other, (2, 3, 40), (5, 6, 30)])
    assert groups == [0, 0, 0, 3, 3, 3, 3]


def test_a_giant_group_is_refused_with_what_to_check(images) -> None:
    table = concat([image_features(images[i % 5]) for i in range(20)] + [image_features(images[6])])
    with pytest.raises(DataError, match=r"puts 20 of 21 images into one group.*check whether"):
        find_groups(table, DedupeConfig(max_group_share=0.5))


def _ingest(repo: DatasetRepo, images: list[Image.Image], root: Path):
    for i, image in enumerate(images):
        folder = root / ("good" if i % 2 else "blowhole")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.jpg", quality=90)
    return repo.add(root).version


def test_features_are_cached_by_blob_and_a_corrupt_cache_is_rebuilt(repo, images, tmp_path) -> None:
    version = _ingest(repo, images, tmp_path / "images")
    assert any("not looked for at ingest" in n for n in version.metadata["validation"]["notes"])
    assert not (repo.root / "near-duplicates").exists()  # ingest leaves features to dedupe/split
    first = near_duplicate_report(repo, version.records)
    assert first.computed == len(images) and first.notes == []
    assert near_duplicate_report(repo, version.records).computed == 0
    (cache,) = (repo.root / "near-duplicates").iterdir()
    (cache / "desc.npy").write_bytes(b"garbage")
    manifests = sorted(p.read_bytes() for p in repo.root.rglob("*.parquet"))
    rebuilt = near_duplicate_report(repo, version.records)
    assert rebuilt.computed == len(images) and rebuilt.group == first.group
    assert "is unreadable" in rebuilt.notes[0] and "rebuilt" in rebuilt.notes[0]
    assert sorted(p.read_bytes() for p in repo.root.rglob("*.parquet")) == manifests
    groups = rebuilt.groups()
    assert len(groups) == 1 and len(groups[0]) == 5


def test_split_keeps_a_rotated_family_together(repo, images, tmp_path) -> None:
    tiles = [
        _crop("flower.jpg", (x, y, x + 140, y + 140))
        for x in range(0, 560, 140)
        for y in (0, 140, 280)
    ]
    version = _ingest(repo, images[:5] + tiles, tmp_path / "images")
    split = repo.split(version.id, val=0.2, test=0.2, seed=1)
    family = {r.split for r in split.records if Path(r.path).stem in {"0", "1", "2", "3", "4"}}
    assert len(family) == 1
    s = split.metadata["split"]
    assert s["near_duplicate_method"] == "orb-affine-ransac"
    assert s["near_duplicate_groups_shared"] == 0
    assert s["test_images_with_a_near_duplicate_elsewhere"] == 0


def test_the_cache_grows_by_new_blobs_only(images, tmp_path) -> None:
    from visionline.data._dedupe_features import FeatureCache

    tables = [image_features(im) for im in images]
    cache = FeatureCache(tmp_path)
    cache.add(["a", "b", "c"], concat(tables[:3]))
    FeatureCache(tmp_path).add(["d", "e"], concat(tables[3:5]))
    grown = FeatureCache(tmp_path)
    assert grown.known() == {"a", "b", "c", "d", "e"} and grown.message is None
    assert np.array_equal(grown.table(["e", "a"]).desc, concat([tables[4], tables[0]]).desc)


def test_a_cache_of_an_earlier_feature_format_is_removed(images, tmp_path) -> None:
    from visionline.data._dedupe_features import FeatureCache

    stale = tmp_path / "near-duplicates" / "orb-256-600-31-16-v4"
    stale.mkdir(parents=True)
    (stale / "desc.npy").write_bytes(b"old features")
    FeatureCache(tmp_path).add(["a"], image_features(images[0]))
    assert not stale.exists()
    assert FeatureCache(tmp_path).known() == {"a"}


def test_keypoints_avoid_the_fill_a_rotation_leaves(images) -> None:
    from visionline.data._dedupe_features import _content_mask

    rotated = np.asarray(images[1].convert("L"))  # rotated by 37 deg on a flat grey fill
    mask = _content_mask(rotated)
    assert mask[0, 0] == 0 and mask[-1, -1] == 0  # the fill's corners
    assert mask[96, 96] == 255  # the picture itself
    texture = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    assert _content_mask(texture).min() == 255  # nothing flat, nothing masked


def test_look_alikes_on_one_background_stay_apart_while_their_copies_join() -> None:
    from visionline.synth import SynthConfig, SynthLine

    line = SynthLine(SynthConfig(size=192, seed=3))
    apples = [line.render(i, None).image().convert("RGB") for i in range(12)]
    copies = [_copy(apples[0], a, f, k, 1.0) for a, f, k in ((70, True, 0.85), (160, False, 0.9))]
    result = find_groups(concat([image_features(im) for im in apples + copies]))
    assert [0, 12, 13] in result.groups()  # no other apple joins the copies' group
    assert len(result.groups()) <= 2  # a small folder may tie one look-alike pair (see docs)


def test_a_large_table_is_gathered_into_memory_maps(images, tmp_path, monkeypatch) -> None:
    from visionline.data import _dedupe_features
    from visionline.data._dedupe_features import FeatureCache

    tables = [image_features(im) for im in images[:4]]
    FeatureCache(tmp_path).add(["a", "b", "c", "d"], concat(tables))
    monkeypatch.setattr(_dedupe_features, "_IN_MEMORY_ROWS", 2)
    table = FeatureCache(tmp_path).table(["d", "b", "a"])
    assert isinstance(table.desc, np.memmap)
    expected = concat([tables[3], tables[1], tables[0]])
    assert np.array_equal(table.desc, expected.desc) and np.array_equal(table.xy, expected.xy)


def test_background_is_a_place_shared_beyond_chance_not_a_common_word() -> None:
    from visionline.data._dedupe_features import FEATURES, THUMB, FeatureTable
    from visionline.data._dedupe_retrieval import background

    rng = np.random.default_rng(0)
    n, slots = 40, 60
    xy = np.zeros((n, 2, FEATURES, 4), np.float16)
    words = np.full((n, 2, FEATURES), -1, np.int16)
    centre = rng.uniform(96, 160, (n, 2, slots, 2))  # the object: 4 central 16 px cells
    xy[:, :, :slots, :2] = centre
    words[:, :, :slots] = rng.integers(2, 12, (n, 2, slots))  # a few common words on it
    xy[:, :, 0, :2] = (4.0, 4.0)  # word 1 in the top-left cell of every image: static background
    words[:, :, 0] = 1
    table = FeatureTable(
        xy,
        np.zeros((n, 2, FEATURES, 32), np.uint8),
        np.full((n, 2), slots),
        np.zeros((n, THUMB, THUMB), np.uint8),
    )
    flagged = background(table, words, 16)
    assert flagged[:, :, 0].all()
    assert flagged[:, :, 1:slots].mean() < 0.05  # each common word sits in each centre cell


def _tile(name: str) -> Image.Image:
    tiles = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "magnetic-tile-defect"
    return Image.open(tiles / "MT_Free" / "Imgs" / name).convert("RGB").resize((256, 256))


def _sheared_copy(
    image: Image.Image, angle: float, shear: float, keep: float, light: float, flip: bool
) -> Image.Image:
    out = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image
    fill = tuple(int(v) for v in np.asarray(out).reshape(-1, 3).mean(0))
    out = out.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    w, h = out.size
    out = out.transform(
        (w, h),
        Image.Transform.AFFINE,
        (1, shear, -shear * h / 2, 0, 1, 0),
        Image.Resampling.BILINEAR,
        fillcolor=fill,
    )
    margin_w, margin_h = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    out = out.crop((margin_w, margin_h, w - margin_w, h - margin_h)).resize((256, 256))
    buffer = io.BytesIO()
    ImageEnhance.Brightness(out).enhance(light).save(buffer, "JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_a_low_texture_copy_cropped_and_sheared_joins_on_a_second_look() -> None:
    """A magnetic tile (fine brushed texture) cropped to 64 % of its side, sheared by 0.18 and
    turned: its few keypoint matches score like a look-alike's in the first pass."""
    source = _tile("exp1_num_29469.jpg")
    copies = [
        _sheared_copy(source, 90, 0.0, 0.95, 1.1, False),
        _sheared_copy(source, 200, 0.05, 0.9, 0.9, True),
        _sheared_copy(source, 300, 0.0, 1.0, 1.2, False),
        _sheared_copy(source, 165.5, 0.18, 0.64, 1.1, True),
    ]
    others = ["exp2_num_157736", "exp2_num_245780", "exp2_num_258847", "exp1_num_824"]
    others += ["exp1_num_166172", "exp1_num_147928", "exp1_num_3786", "exp1_num_6539"]
    look_alikes = [_tile(f"{name}.jpg") for name in others]
    table = concat([image_features(im) for im in [source, *copies, *look_alikes]])
    first_pass = find_groups(table, DedupeConfig(second_look_candidates=0)).group
    assert first_pass[4] != first_pass[0] and len(set(first_pass[:4])) == 1
    result = find_groups(table)
    assert result.groups() == [[0, 1, 2, 3, 4]]  # the hard copy joins, no other tile does
