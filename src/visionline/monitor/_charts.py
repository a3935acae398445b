"""Tiny inline-SVG charts for the dashboard: no JavaScript library, no CDN, works offline.

Python computes the geometry; the templates (templates/chart_*.svg.j2) write the markup with
autoescaping, so a delivery id or detector name is always text. Each chart is returned as markup
that the dashboard's template inserts as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

W, H, PAD = 560, 200, 36
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _chart(kind: str, title: str, **context: Any) -> Any:
    from markupsafe import Markup

    from visionline._templates import render

    page = render(f"chart_{kind}.svg.j2", title=title, css=kind, W=W, H=H, PAD=PAD, **context)
    return Markup(page)


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    *,
    hline: float | None = None,
    y_label: str = "",
) -> Any:
    """One polyline with a circle per point per series; `hline` draws a dashed threshold."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _chart("line", title, empty=True)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + ([hline] if hline is not None else [])
    sx = _scale(min(xs), max(xs), PAD, W - 12)
    sy = _scale(0.0, max(max(ys), 1e-9) * 1.1, H - PAD, 12)
    lines = [
        {
            "name": name,
            "colour": colour,
            "coords": " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values),
            "points": [
                {"x": f"{x:g}", "y": f"{y:.6g}", "cx": f"{sx(x):.1f}", "cy": f"{sy(y):.1f}"}
                for x, y in values
            ],
        }
        for colour, (name, values) in zip(COLOURS * 4, series.items())
    ]
    threshold = f"{sy(hline):.1f}" if hline is not None else None
    return _chart("line", title, empty=False, series=lines, threshold=threshold, y_label=y_label)


def interval_chart(
    labels: Sequence[str],
    estimates: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    title: str,
) -> Any:
    """A point with its interval per group (e.g. corrected defect rate per delivery)."""
    if not labels:
        return _chart("interval", title, empty=True)
    top = max(max(highs), 1e-3) * 1.1
    sy = _scale(0.0, top, H - PAD, 12)
    step = (W - PAD - 12) / len(labels)
    groups = [
        {
            "name": name,
            "x": f"{PAD + step * (i + 0.5):.1f}",
            "low": f"{sy(lo):.1f}",
            "high": f"{sy(hi):.1f}",
            "value": f"{est:.6g}",
            "y": f"{sy(est):.1f}",
        }
        for i, (name, est, lo, hi) in enumerate(zip(labels, estimates, lows, highs))
    ]
    ticks = [
        {"y": f"{sy(top / 1.1 * frac) + 3:.1f}", "label": f"{top / 1.1 * frac:.0%}"}
        for frac in (0.0, 0.5, 1.0)
    ]
    return _chart(
        "interval", title, empty=False, groups=groups, ticks=ticks, show_labels=len(labels) <= 16
    )


def histogram_chart(edges: Sequence[float], series: dict[str, Sequence[float]], title: str) -> Any:
    """Overlaid step histograms (shares per bin), e.g. production vs reference confidence."""
    if not series or not edges:
        return _chart("histogram", title, empty=True)
    top = max(max(v) for v in series.values()) or 1.0
    sx = _scale(edges[0], edges[-1], PAD, W - 12)
    sy = _scale(0.0, top * 1.1, H - PAD, 12)
    steps = []
    for colour, (name, shares) in zip(COLOURS, series.items()):
        path = [f"M{sx(edges[0]):.1f},{sy(0):.1f}"]
        path += [
            f"L{sx(edges[i]):.1f},{sy(share):.1f}L{sx(edges[i + 1]):.1f},{sy(share):.1f}"
            for i, share in enumerate(shares)
        ]
        points = [
            {
                "y": f"{share:.6g}",
                "cx": f"{sx((edges[i] + edges[i + 1]) / 2):.1f}",
                "cy": f"{sy(share):.1f}",
            }
            for i, share in enumerate(shares)
        ]
        steps.append({"name": name, "colour": colour, "path": "".join(path), "points": points})
    return _chart("histogram", title, empty=False, series=steps)


def neg_log10(p: float) -> float:
    return -math.log10(max(p, 1e-12))
