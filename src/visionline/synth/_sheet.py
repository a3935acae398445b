"""A labelled contact sheet: one row per variety, per defect subtype and per drift condition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from visionline.synth._config import Drift, DriftConfig, SynthConfig
from visionline.synth._generate import _STREAM_PREVIEW, SynthLine, line_spec
from visionline.synth._render import AppleSpec

_LABEL_WIDTH = 190
_TITLE_HEIGHT = 34


def _rows(config: SynthConfig, columns: int) -> list[tuple[str, list[Image.Image]]]:
    line = SynthLine(config, _STREAM_PREVIEW)
    render = line.renderer.render
    rows: list[tuple[str, list[Image.Image]]] = []
    for v, variety in enumerate((*config.varieties, config.new_variety)):
        new = " (new)" if variety not in config.varieties else ""
        cells = [
            render(
                np.random.default_rng([config.seed, 10, v, k]),
                AppleSpec(
                    variety=variety, camera=config.camera, stem_probability=config.stem_probability
                ),
            )[0]
            for k in range(columns)
        ]
        rows.append((f"{variety.value}{new}", cells))
    for t, subtype in enumerate(config.subtypes):
        cells = []
        for k in range(columns):
            severity = 0.05 + 0.95 * k / max(columns - 1, 1)
            spec = AppleSpec(
                variety=config.varieties[k % len(config.varieties)],
                subtype=subtype,
                severity=severity,
                camera=config.camera,
                stem_probability=config.stem_probability,
            )
            cells.append(render(np.random.default_rng([config.seed, 20, t, k]), spec)[0])
        rows.append((f"{subtype.value}\nsubtle -> obvious", cells))
    for d, drift in enumerate(Drift):
        cells = []
        for k in range(columns):
            strength = k / max(columns - 1, 1)
            if drift is Drift.NEW_VARIETY:
                drifting = config.model_copy(
                    update={"drift": DriftConfig(kind=drift, start=0, ramp=max(columns - 1, 1))}
                )
                spec, rng = line_spec(drifting, _STREAM_PREVIEW, k, None)
            else:
                rng = np.random.default_rng([config.seed, 30, d])
                spec = AppleSpec(
                    variety=config.varieties[d % len(config.varieties)],
                    camera=config.camera,
                    drift=drift,
                    drift_strength=strength,
                    stem_probability=config.stem_probability,
                    smudge_seed=config.seed,
                )
            cells.append(render(rng, spec)[0])
        rows.append((f"drift: {drift.value}\nstrength 0 -> 1", cells))
    return rows


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def contact_sheet(config: SynthConfig, out: Path, columns: int = 8) -> Path:
    """Render the sheet to `out` (PNG) and return the path."""
    rows = _rows(config, columns)
    cell = config.size
    width = _LABEL_WIDTH + columns * cell
    sheet = Image.new("RGB", (width, _TITLE_HEIGHT + len(rows) * cell), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (10, 8),
        f"visionline synth: seed {config.seed}, {cell}x{cell} px",
        fill=(20, 20, 20),
        font=_font(18),
    )
    for r, (label, cells) in enumerate(rows):
        top = _TITLE_HEIGHT + r * cell
        draw.multiline_text((10, top + cell // 2 - 18), label, fill=(20, 20, 20), font=_font(15))
        for k, image in enumerate(cells):
            sheet.paste(image, (_LABEL_WIDTH + k * cell, top))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out
