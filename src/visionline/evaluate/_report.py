"""A self-contained HTML evaluation report: every plot embedded as a base64 PNG, no network."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{margin-bottom:0}.meta{color:#666}table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.pass{color:#127a12;font-weight:bold}
.fail{color:#b00020;font-weight:bold}.warn{background:#fff4ce;padding:.5rem;border-left:4px solid #e0a800}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}.grid figure{margin:0;width:140px;font-size:.8rem}
.grid img{width:140px;height:140px;object-fit:contain;background:#000}img.plot{max-width:100%}
"""


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
            ax.hist(values, bins=bins, alpha=0.5, label=f"{name} ({values.size})")
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


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(
    metrics: dict[str, Any],
    scores: np.ndarray,
    labels: np.ndarray,
    worst: Sequence[tuple[Image.Image, str]],
    title: str,
    meta: dict[str, str],
) -> str:
    """The report as one HTML string; `metrics` is the dict that goes into metrics.json."""
    names = metrics["class_names"]
    threshold = metrics["threshold"]
    intervals = metrics["intervals"]
    operating = metrics.get("operating_point", {})
    gates = metrics.get("gates")
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<p class='meta'>"
        + " · ".join(
            f"{html.escape(k)}: <code>{html.escape(str(v))}</code>" for k, v in meta.items()
        )
        + "</p>",
    ]
    if operating.get("warning"):
        parts.append(f"<p class='warn'>{html.escape(operating['warning'])}</p>")
    headline = [
        ("False-reject rate", "false_reject_rate", _pct),
        ("Escape rate", "escape_rate", _pct),
        ("Defect recall", "defect_recall", _pct),
        ("Accuracy", "accuracy", _pct),
        ("ROC-AUC", "roc_auc", _num),
        ("PR-AUC", "pr_auc", _num),
    ]
    rows = [
        [
            label,
            f"<span id='m-{key}'>{fmt(metrics[key])}</span>",
            f"{fmt(intervals[key][0])} – {fmt(intervals[key][1])}",
        ]
        for label, key, fmt in headline
    ]
    rows.append(["ECE", f"<span id='m-ece'>{_num(metrics['ece'])}</span>", ""])
    parts.append("<h2>Headline</h2>")
    parts.append(_table(["metric", "value", f"{metrics['confidence']:.0%} bootstrap CI"], rows))
    parts.append(
        f"<p>Threshold <b id='m-threshold'>{threshold:.4f}</b> set on {operating.get('n_good', '?')} "
        f"good validation images for a false-reject budget of "
        f"{_pct(operating.get('target_false_reject_rate', float('nan')))}; exact upper bound on the "
        f"validation false-reject rate: {_pct(operating.get('false_reject_upper_bound', float('nan')))}"
        f". Test: {metrics['n_good']} good, {metrics['n_defect']} defective images.</p>"
    )
    if gates:
        gate_rows = [
            [
                html.escape(gate["name"]),
                _pct(gate["value"]) if gate["unit"] == "%" else _num(gate["value"]),
                ("≤ " if gate["direction"] == "max" else "≥ ")
                + (_pct(gate["limit"]) if gate["unit"] == "%" else _num(gate["limit"])),
                "<span class='pass'>pass</span>"
                if gate["passed"]
                else f"<span class='fail'>fail</span> {html.escape(gate['reason'])}",
            ]
            for gate in gates["gates"]
        ]
        parts.append(
            "<h2>Quality gates</h2>" + _table(["gate", "value", "goal", "result"], gate_rows)
        )
    class_rows = [
        [
            html.escape(name),
            _num(v["precision"]),
            _num(v["recall"]),
            _num(v["f1"]),
            str(v["support"]),
        ]
        for name, v in metrics["per_class"].items()
    ]
    parts.append(
        "<h2>Per class</h2>" + _table(["class", "precision", "recall", "F1", "support"], class_rows)
    )
    sub_rows = [[html.escape(k), _pct(v)] for k, v in metrics["subtype_recall"].items()]
    parts.append(
        "<h3>Detection recall per defect subtype</h3>" + _table(["subtype", "flagged"], sub_rows)
    )
    parts.append("<h2>Confusion matrices</h2>")
    parts.append(
        f"<img class='plot' alt='confusion matrix' src='data:image/png;base64,"
        f"{_confusion_plot(np.asarray(metrics['confusion_matrix']), names, 'classes at the threshold')}'>"
    )
    parts.append(
        f"<img class='plot' alt='good/defect confusion matrix' src='data:image/png;base64,"
        f"{_confusion_plot(np.asarray(metrics['binary_confusion_matrix']), ['good', 'defect'], 'good / defect')}'>"
    )
    curves = _curves_plot(labels != 0, scores)
    if curves:
        parts.append(
            f"<h2>ROC and PR</h2><img class='plot' alt='ROC and PR curves' src='data:image/png;base64,{curves}'>"
        )
    parts.append(
        "<h2>Score distributions</h2><img class='plot' alt='score histograms' "
        f"src='data:image/png;base64,{_histogram_plot(scores, labels, names, threshold)}'>"
    )
    parts.append(
        "<h2>Calibration</h2><img class='plot' alt='reliability diagram' "
        f"src='data:image/png;base64,{_reliability_plot(metrics['reliability'])}'>"
    )
    if worst:
        figures = "".join(
            f"<figure><img class='worst' alt='misclassified' src='data:image/png;base64,{_image_png(image)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            for image, caption in worst
        )
        parts.append(f"<h2>Worst mistakes</h2><div class='grid'>{figures}</div>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
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
