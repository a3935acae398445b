"""The README's "Your own images" commands, run as a user runs them, on a small generated folder.

The commands are read from README.md itself, so the quick start cannot drift from what works.
Two liberties only: `pip install` is skipped (the test runs inside the installed package) and
training is shortened to one epoch at 64 px (`--epochs 1 --image-size 64`; eval, export and score
follow the model's own preprocessing, so they run at 64 px too).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.cli.cli_support import run_visionline

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_commands() -> list[list[str]]:
    """The shell lines of the first bash block under '## Your own images', comments removed."""
    section = README.read_text().split("## Your own images", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = []
    for line in block.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(words)
    return commands


def _photo(rng: np.random.Generator, defect: bool) -> Image.Image:
    pixels = rng.normal(150, 12, (72, 96, 3)).clip(0, 255)
    if defect:
        y, x = rng.integers(10, 50), rng.integers(10, 70)
        pixels[y : y + 14, x : x + 16] = (60, 40, 30)
    return Image.fromarray(pixels.astype(np.uint8))


def make_photos(root: Path, parts: int, seed: int) -> None:
    """Two photos of each part, in class folders: every fourth part is a bruised one."""
    rng = np.random.default_rng(seed)
    for part in range(parts):
        defect = part % 4 == 0
        folder = root / ("bruise" if defect else "good")
        folder.mkdir(parents=True, exist_ok=True)
        for shot in "ab":
            _photo(rng, defect).save(folder / f"part{part:02d}_{shot}.png")


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path: Path):
    photos = tmp_path / "photos"
    make_photos(photos / "parts", parts=48, seed=0)
    make_photos(photos / "new", parts=8, seed=1)
    commands = quick_start_commands()
    assert commands[0][:2] == ["pip", "install"] and ["cd", "plant"] in commands
    cwd = tmp_path
    for words in commands:
        if words[0] == "pip":
            continue
        if words[0] == "cd":
            cwd = cwd / words[1]
            continue
        assert words[0] == "visionline", words
        args = [w.replace("~/photos", str(photos)) for w in words[1:]]
        if args[0] == "train":
            args += ["--epochs", "1", "--image-size", "64"]
        done = run_visionline(*args, cwd=cwd)
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stdout}\n{done.stderr}"
    bundle = cwd / "bundles" / "parts"
    assert (bundle / "bundle.json").is_file() and (bundle / "bundle.sig").is_file()
    rows = pd.read_parquet(next((cwd / "reports").glob("score-*.parquet")))
    assert len(rows) == 16 and set(rows["decision"]) <= {"good", "defect"}
