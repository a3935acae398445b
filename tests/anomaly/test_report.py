"""The anomaly report's heatmap gallery: flagged, missed and false-rejected images, each an
overlay of its anomaly map, with the annotated defect outlined where a mask is known."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from visionline.anomaly import AnomalyEvalResult
from visionline.anomaly._report import OUTLINE, outline, overlay, write_heatmap_report
from visionline.data import BlobStore, ImageRecord
from visionline.evaluate import GateReport, choose_operating_point
from visionline.preprocessing import Preprocessing

SIZE = 32
PREP = Preprocessing(size=SIZE)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _record(store: BlobStore, name: str, label: str, mask: np.ndarray | None) -> ImageRecord:
    image = Image.new("RGB", (SIZE, SIZE), (90, 90, 90))
    mask_sha = None if mask is None else store.put(_png(Image.fromarray(mask * np.uint8(255))))
    return ImageRecord(
        sha256=store.put(_png(image)),
        path=f"{name}.png",
        bytes=0,
        width=SIZE,
        height=SIZE,
        mode="RGB",
        label=label,
        subtype=None if label == "good" else "crack",
        source="test",
        split="test",
        mask_sha256=mask_sha,
    )


def test_outline_is_the_one_pixel_border_of_the_mask():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    border = outline(mask)
    assert border.sum() == 12 and not border[2:4, 2:4].any() and not border[0].any()


def test_an_overlay_outlines_the_defect_mask_in_white_and_only_when_given():
    image = Image.new("RGB", (SIZE, SIZE), (90, 90, 90))
    amap = np.zeros((SIZE, SIZE), np.float32)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[8:16, 8:16] = True
    with_mask = np.asarray(overlay(image, amap, PREP, 1.0, mask))
    without = np.asarray(overlay(image, amap, PREP, 1.0))
    white = (with_mask == OUTLINE).all(axis=2)
    assert white[8, 8:16].all() and not white[12, 12] and white.sum() == 28
    assert not (without == OUTLINE).all(axis=2).any()


def test_the_gallery_sorts_images_into_flagged_missed_and_false_rejected(tmp_path):
    store = BlobStore(tmp_path / "store")
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:12, 4:12] = True
    records = [
        _record(store, "caught", "defect", mask),
        _record(store, "escaped", "defect", None),
        _record(store, "rejected-good", "good", None),
        _record(store, "passed-good", "good", None),
    ]
    scores = np.array([5.0, 0.5, 3.0, 0.1])
    labels = np.array([1, 1, 0, 0])
    point = choose_operating_point(np.array([0.1, 0.2, 1.0]), 0.02)  # threshold 1.0
    result = AnomalyEvalResult(
        metrics={
            "roc_auc": 0.75,
            "defect_recall": 0.5,
            "false_reject_rate": 0.5,
            "pixel_auroc": 0.9,
            "aupro": float("nan"),
            "subtype_recall": {"crack": 0.5},
        },
        operating_point=point,
        gates=GateReport([]),
        scores=scores,
        labels=labels,
        records=records,
    )
    maps = np.zeros((4, SIZE, SIZE), np.float32)
    maps[0, 4:12, 4:12] = 1.0
    page = write_heatmap_report(
        tmp_path / "report.html", result, maps, store, PREP, "t"
    ).read_text()

    sections = dict(re.findall(r"<h2>(.*?) \(\d+\)</h2><div class='grid'>(.*?)</div>", page))
    assert set(sections) == {"Flagged defects (highest scores)", "Missed defects", "False rejects"}
    assert "caught.png" in sections["Flagged defects (highest scores)"]
    assert "escaped.png" in sections["Missed defects"]
    assert "rejected-good.png" in sections["False rejects"]
    assert "passed-good" not in page
    thumbnails = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(thumbnails) == 3
    caught = np.asarray(Image.open(io.BytesIO(base64.b64decode(thumbnails[0]))).convert("RGB"))
    assert (caught == OUTLINE).all(axis=2).any()  # the flagged defect's mask is outlined
    assert "white outline" in page and "n/a" in page  # legend; AUPRO not computable
