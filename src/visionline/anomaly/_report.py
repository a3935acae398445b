"""A self-contained HTML report of an anomaly evaluation: the numbers, and heatmap overlays of
flagged defects, missed defects and false rejects, so an operator sees where the model looks.
Where a defect's mask is known its outline is drawn on the overlay, so a glance tells whether the
hot spot is the defect or something else."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from visionline.anomaly._evaluate import AnomalyEvalResult
    from visionline.data import BlobStore
    from visionline.preprocessing import Preprocessing

SHOWN = 8
THUMB = 160
_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}.grid figure{margin:0;width:160px;font-size:.75rem}
.pass{color:#127a12}.fail{color:#b00020}"""


OUTLINE = (255, 255, 255)
LEGEND = (
    "Heatmaps: red is far from every good patch (one colour scale for all images); "
    "a white outline marks the annotated defect."
)


def overlay(
    image: Image.Image,
    amap: np.ndarray,
    preprocessing: Preprocessing,
    vmax: float,
    mask: np.ndarray | None = None,
) -> Image.Image:
    """The model-input image with the anomaly map blended on top (red = far from any good patch)
    and, given a full-size bool `mask`, the defect's outline in white."""
    import matplotlib

    from visionline.data import mask_in_model_frame

    base = Image.fromarray(preprocessing.to_uint8(image)[..., :3]).convert("RGB")
    heat = matplotlib.colormaps["jet"](np.clip(amap / max(vmax, 1e-9), 0, 1))[..., :3]
    heat_image = Image.fromarray((heat * 255).astype(np.uint8)).resize(base.size)
    blended = Image.blend(base, heat_image, 0.45)
    if mask is None or not mask.any():
        return blended
    pixels = np.array(blended)
    pixels[outline(mask_in_model_frame(mask, preprocessing))] = OUTLINE
    return Image.fromarray(pixels)


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a bool mask that touch a pixel outside it (a one-pixel border)."""
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def _png(image: Image.Image) -> str:
    thumb = image.copy()
    thumb.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    return html.escape(str(value))


def write_heatmap_report(
    path: Path,
    result: AnomalyEvalResult,
    maps: np.ndarray,
    blobs: BlobStore,
    preprocessing: Preprocessing,
    title: str,
) -> Path:
    from visionline.anomaly._records import mask_of
    from visionline.preprocessing import decode_image

    metrics = result.metrics
    threshold = result.operating_point.threshold
    flagged = result.scores > threshold
    defect = result.labels != 0
    vmax = float(np.quantile(maps, 0.999)) if maps.size else 1.0
    groups = {
        "Flagged defects (highest scores)": np.flatnonzero(flagged & defect),
        "Missed defects": np.flatnonzero(~flagged & defect),
        "False rejects": np.flatnonzero(flagged & ~defect),
    }
    sections = []
    for heading, indices in groups.items():
        order = indices[np.argsort(-result.scores[indices])][:SHOWN]
        figures = []
        for i in order:
            record = result.records[i]
            image = overlay(
                decode_image(blobs.get(record.sha256)),
                maps[i],
                preprocessing,
                vmax,
                mask_of(blobs, record),
            )
            caption = (
                f"{html.escape(record.model_class)} · {result.scores[i]:.3f} · "
                f"{html.escape(Path(record.path).name)}"
            )
            figures.append(
                f'<figure><img src="data:image/png;base64,{_png(image)}"><figcaption>{caption}</figcaption></figure>'
            )
        body = "".join(figures) or "<p>none</p>"
        sections.append(f"<h2>{heading} ({len(indices)})</h2><div class='grid'>{body}</div>")
    rows = [
        ("image AUROC", metrics["roc_auc"]),
        ("defect recall", metrics["defect_recall"]),
        ("false-reject rate", metrics["false_reject_rate"]),
        ("pixel AUROC", metrics["pixel_auroc"]),
        ("AUPRO (FPR ≤ 0.3)", metrics["aupro"]),
        ("threshold", threshold),
    ] + [(f"recall {k}", v) for k, v in metrics["subtype_recall"].items()]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    verdict = "pass" if result.gates.passed else "fail"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='{verdict}'>{html.escape(result.gates.summary())}</p>"
        f"<table>{table}</table><p>{LEGEND}</p>{''.join(sections)}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
