"""The contact sheet: one labelled row per variety, subtype and drift condition."""

from __future__ import annotations

import numpy as np
from PIL import Image

from visionline.synth import Drift, Subtype, SynthConfig, contact_sheet


def test_contact_sheet_layout(tmp_path):
    config = SynthConfig(size=40)
    path = contact_sheet(config, tmp_path / "sheet.png", columns=3)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    rows = len(config.varieties) + 1 + len(Subtype) + len(Drift)
    label_width, title = 190, 34
    assert pixels.shape == (title + rows * 40, label_width + 3 * 40, 3)
    cells = [pixels[title + r * 40 : title + (r + 1) * 40, label_width:] for r in range(rows)]
    assert all(cell.std() > 10 for cell in cells), "every row holds rendered apples"
    assert not np.array_equal(cells[0], cells[1])
    labels = pixels[title:, :label_width]
    assert (labels < 100).any(), "row labels are drawn"
