from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionline.data import TILE_SPEC, group_ids
from visionline.errors import ConfigError, DataError

TILES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "magnetic-tile-defect"


def test_regex_takes_the_first_capture_group_else_the_whole_match() -> None:
    paths = ["a/cam1_obj7_x.jpg", "b/cam2_obj7_y.jpg", "a/cam1_obj8.jpg"]
    assert group_ids(paths, r"regex:obj(\d+)") == ["7", "7", "8"]
    assert group_ids(paths, r"regex:obj\d+") == ["obj7", "obj7", "obj8"]


def test_sequence_joins_neighbouring_frames_within_a_folder_only() -> None:
    paths = [
        "good/exp1_num_100.jpg",
        "good/exp2_num_130.jpg",
        "good/exp1_num_400.jpg",
        "bad/exp3_num_160.jpg",
        "good/exp3_num_150.jpg",
    ]
    ids = group_ids(paths, r"sequence:num_(\d+):50")
    assert ids[0] == ids[1] == ids[4]
    assert len({ids[0], ids[2], ids[3]}) == 3


def test_sequence_gap_is_inclusive() -> None:
    ids = group_ids(["f/n_10.jpg", "f/n_20.jpg", "f/n_31.jpg"], r"sequence:n_(\d+):10")
    assert ids[0] == ids[1] != ids[2]


def test_csv_matches_full_paths_or_their_trailing_parts(tmp_path: Path) -> None:
    table = tmp_path / "objects.csv"
    table.write_text("file,object\nimg1.jpg,A\nsub/img2.jpg,A\nimg3.jpg,B\n", encoding="utf-8")
    paths = ["data/x/img1.jpg", "data/sub/img2.jpg", "img3.jpg"]
    assert group_ids(paths, f"csv:{table}:file:object") == ["A", "A", "B"]


def test_csv_errors_name_the_column_and_the_file(tmp_path: Path) -> None:
    table = tmp_path / "objects.csv"
    table.write_text("file,object\nimg1.jpg,A\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no column 'tile'"):
        group_ids(["img1.jpg"], f"csv:{table}:file:tile")
    with pytest.raises(ConfigError, match="Cannot read the CSV"):
        group_ids(["img1.jpg"], f"csv:{tmp_path / 'missing.csv'}:file:object")


def test_near_duplicates_groups_images_by_phash(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64)) * 255).astype(np.uint8)
    other = (rng.random((64, 64)) * 255).astype(np.uint8)
    paths = []
    for name, pixels in (("a", base), ("a_copy", base // 2 + 60), ("b", other)):
        path = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    ids = group_ids(paths, "near-duplicates")
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("regex:(", ConfigError),
        ("sequence:num_(\\d+)", ConfigError),
        ("sequence:num_(\\d+):-3", ConfigError),
        ("csv:only.csv:path", ConfigError),
        ("folder", ConfigError),
    ],
)
def test_malformed_specs_are_config_errors(spec: str, error: type[Exception]) -> None:
    with pytest.raises(error, match="spec"):
        group_ids(["a/num_1.jpg"], spec)


def test_a_key_that_matches_nothing_names_the_spec_and_an_example_path() -> None:
    with pytest.raises(DataError, match=r"'regex:tile\(\\d\+\)'.*1 of 2 paths, e\.g\. 'b/x\.jpg'"):
        group_ids(["a/tile1.jpg", "b/x.jpg"], r"regex:tile(\d+)")
    with pytest.raises(DataError, match="e.g. 'a/frame.jpg'"):
        group_ids(["a/frame.jpg"], r"sequence:num_(\d+):5")


def test_one_giant_chained_group_is_refused() -> None:
    paths = [f"f/num_{i * 10}.jpg" for i in range(40)]
    with pytest.raises(DataError, match="40 of 40 images into one group"):
        group_ids(paths, r"sequence:num_(\d+):10")
    assert len(set(group_ids(paths, r"sequence:num_(\d+):10", max_group_share=1.0))) == 1


def test_tile_spec_gives_one_group_per_physical_tile_on_the_real_file_names() -> None:
    """File names only: each tile is one shot per run exp1..exp6 at neighbouring frame numbers."""
    paths = sorted(str(p.relative_to(TILES)) for p in TILES.glob("MT_*/Imgs/*.jpg"))
    assert len(paths) == 1344
    ids = group_ids(paths, TILE_SPEC)
    members: dict[str, list[str]] = defaultdict(list)
    for path, key in zip(paths, ids):
        members[key].append(path)
    sizes = Counter(len(m) for m in members.values())
    assert 190 <= len(members) <= 200
    assert max(sizes) <= 24
    assert sizes[6] >= 140
    # A group never spans class folders; in most groups each run appears once (one tile).
    run = re.compile(r"exp(\d)_")
    assert all(len({p.split("/")[0] for p in m}) == 1 for m in members.values())
    clean = sum(len({run.search(p).group(1) for p in m}) == len(m) for m in members.values())
    assert clean / len(members) >= 0.8
    # Tile 3667..3789 (exp1..exp6) is one group; the next tile of the folder starts its own.
    blowhole = {Path(p).name: key for p, key in zip(paths, ids) if p.startswith("MT_Blowhole")}
    frames = (3667, 3696, 3710, 3724, 3746, 3789)
    tile = {blowhole[f"exp{k}_num_{n}.jpg"] for k, n in zip(range(1, 7), frames)}
    assert len(tile) == 1
    assert blowhole["exp1_num_4727.jpg"] not in tile
