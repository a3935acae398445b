"""A self-contained HTML evaluation report (templates/report.html.j2): every plot embedded as a
base64 PNG, no network."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


def _figure_png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_png(image: Image.Image, size: int = 140) -> str:
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2%}"


def _num(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _confusion_plot(matrix: np.ndarray, names: list[str], title: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1.0 + 0.6 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = matrix.max() if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if peak and value > peak / 2 else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=color)
    return _figure_png(fig)


def _curves_plot(is_defect: np.ndarray, scores: np.ndarray) -> str | None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    if is_defect.all() or not is_defect.any():
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr, _ = roc_curve(is_defect, scores)
    left.plot(fpr, tpr)
    left.plot([0, 1], [0, 1], ls="--", color="grey")
    left.set(xlabel="false-reject rate", ylabel="defect recall", title="ROC")
    precision, recall, _ = precision_recall_curve(is_defect, scores)
    right.plot(recall, precision)
    right.set(xlabel="defect recall", ylabel="precision", title="Precision–recall")
    return _figure_png(fig)


def _histogram_plot(
    scores: np.ndarray, labels: np.ndarray, names: list[str], threshold: float
) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    bins = np.linspace(0, 1, 41)
    for index, name in enumerate(names):
        values = scores[labels == index]
        if values.size:
            # one filled outline per class, not 40 bar patches: the same picture, half the CPU
            ax.hist(values, bins=bins, alpha=0.5, histtype="stepfilled",
                    label=f"{name} ({values.size})")
    ax.axvline(threshold, color="red", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="defect score = 1 - p(good)", ylabel="images", yscale="log")
    ax.legend(fontsize=8)
    return _figure_png(fig)


def _reliability_plot(reliability: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    edges = np.asarray(reliability["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    accuracy = np.asarray(reliability["accuracy"], dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centers, np.nan_to_num(accuracy), width=edges[1] - edges[0], edgecolor="k", alpha=0.7)
    ax.plot([0, 1], [0, 1], ls="--", color="grey")
    ax.set(
        xlabel="confidence", ylabel="accuracy", title=f"Reliability (ECE {reliability['ece']:.3f})"
    )
    return _figure_png(fig)


def render_report(
    metrics: dict[str, Any],
    scores: np.ndarray,
    labels: np.ndarray,
    worst: Sequence[tuple[Image.Image, str]],
    title: str,
    meta: dict[str, str],
) -> str:
    """The report as one HTML string; `metrics` is the dict that goes into metrics.json."""
    from visionline._templates import render

    names = metrics["class_names"]
    threshold = metrics["threshold"]
    intervals = metrics["intervals"]
    operating = metrics.get("operating_point", {})
    gates = metrics.get("gates")
    headline = [
        ("False-reject rate", "false_reject_rate", _pct),
        ("Escape rate", "escape_rate", _pct),
        ("Defect recall", "defect_recall", _pct),
        ("Accuracy", "accuracy", _pct),
        ("ROC-AUC", "roc_auc", _num),
        ("PR-AUC", "pr_auc", _num),
    ]

    def gate_number(gate: dict[str, Any], key: str) -> str:
        return _pct(gate[key]) if gate["unit"] == "%" else _num(gate[key])

    return render(
        "report.html.j2",
        title=title,
        meta={str(k): str(v) for k, v in meta.items()},
        warning=operating.get("warning"),
        confidence=f"{metrics['confidence']:.0%}",
        headline=[
            {
                "label": label,
                "key": key,
                "value": fmt(metrics[key]),
                "interval": f"{fmt(intervals[key][0])} – {fmt(intervals[key][1])}",
            }
            for label, key, fmt in headline
        ],
        ece=_num(metrics["ece"]),
        threshold=f"{threshold:.4f}",
        n_good_val=operating.get("n_good", "?"),
        target_frr=_pct(operating.get("target_false_reject_rate", float("nan"))),
        frr_upper=_pct(operating.get("false_reject_upper_bound", float("nan"))),
        n_good=metrics["n_good"],
        n_defect=metrics["n_defect"],
        gates=[
            {
                "name": gate["name"],
                "value": gate_number(gate, "value"),
                "goal": ("≤ " if gate["direction"] == "max" else "≥ ") + gate_number(gate, "limit"),
                "passed": gate["passed"],
                "reason": gate["reason"],
            }
            for gate in gates["gates"]
        ]
        if gates
        else [],
        per_class=[
            [name, _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), str(v["support"])]
            for name, v in metrics["per_class"].items()
        ],
        subtypes=[[k, _pct(v)] for k, v in metrics["subtype_recall"].items()],
        confusion=_confusion_plot(
            np.asarray(metrics["confusion_matrix"]), names, "classes at the threshold"
        ),
        binary_confusion=_confusion_plot(
            np.asarray(metrics["binary_confusion_matrix"]), ["good", "defect"], "good / defect"
        ),
        curves=_curves_plot(labels != 0, scores),
        histogram=_histogram_plot(scores, labels, names, threshold),
        reliability=_reliability_plot(metrics["reliability"]),
        worst=[(_image_png(image), caption) for image, caption in worst],
    )


def write_report(path: Path, **kwargs: Any) -> Path:
    """Render the report and write it atomically."""
    import matplotlib

    matplotlib.use("Agg")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_report(**kwargs), encoding="utf-8")
    tmp.replace(path)
    return path
