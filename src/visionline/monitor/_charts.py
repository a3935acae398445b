"""Tiny inline-SVG charts for the dashboard: no JavaScript library, no CDN, works offline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H, PAD = 560, 200, 36
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _frame(body: str, title: str, css: str) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>{body}</svg>'
    )


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    *,
    hline: float | None = None,
    y_label: str = "",
) -> str:
    """One polyline with a circle per point per series; `hline` draws a dashed threshold."""
    points = [p for values in series.values() for p in values]
    if not points:
        return f'<p class="empty">No data yet for {escape(title)}.</p>'
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + ([hline] if hline is not None else [])
    sx = _scale(min(xs), max(xs), PAD, W - 12)
    sy = _scale(0.0, max(max(ys), 1e-9) * 1.1, H - PAD, 12)
    body = []
    for colour, (name, values) in zip(COLOURS * 4, series.items()):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        body.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'
        )
        body.extend(
            f'<circle class="point" data-series="{escape(name)}" data-x="{x:g}" data-y="{y:.6g}" '
            f'cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>'
            for x, y in values
        )
    if hline is not None:
        body.append(
            f'<line class="threshold" x1="{PAD}" x2="{W - 12}" y1="{sy(hline):.1f}" '
            f'y2="{sy(hline):.1f}" stroke="#555" stroke-dasharray="4 3"/>'
        )
    legend = "".join(
        f'<text x="{PAD + 8 + 130 * i}" y="{H - 8}" font-size="11" fill="{c}">{escape(n)}</text>'
        for i, (c, n) in enumerate(zip(COLOURS * 4, series))
    )
    body.append(legend)
    body.append(f'<text x="4" y="12" font-size="10" fill="#555">{escape(y_label)}</text>')
    return _frame("".join(body), title, "line")


def interval_chart(
    labels: Sequence[str],
    estimates: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    title: str,
) -> str:
    """A point with its interval per group (e.g. corrected defect rate per delivery)."""
    if not labels:
        return f'<p class="empty">No data yet for {escape(title)}.</p>'
    top = max(max(highs), 1e-3) * 1.1
    sy = _scale(0.0, top, H - PAD, 12)
    step = (W - PAD - 12) / len(labels)
    body = []
    for i, (name, est, lo, hi) in enumerate(zip(labels, estimates, lows, highs)):
        x = PAD + step * (i + 0.5)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{sy(lo):.1f}" y2="{sy(hi):.1f}" stroke="#2563eb"/>'
            f'<circle class="point" data-label="{escape(name)}" data-y="{est:.6g}" cx="{x:.1f}" '
            f'cy="{sy(est):.1f}" r="3.5" fill="#2563eb"/>'
        )
        if len(labels) <= 16:
            body.append(
                f'<text x="{x:.1f}" y="{H - PAD + 14}" font-size="9" text-anchor="middle">{escape(name[:10])}</text>'
            )
    for frac in (0.0, 0.5, 1.0):
        value = top / 1.1 * frac
        body.append(
            f'<text x="2" y="{sy(value) + 3:.1f}" font-size="9" fill="#555">{value:.0%}</text>'
        )
    return _frame("".join(body), title, "interval")


def histogram_chart(edges: Sequence[float], series: dict[str, Sequence[float]], title: str) -> str:
    """Overlaid step histograms (shares per bin), e.g. production vs reference confidence."""
    if not series or not edges:
        return f'<p class="empty">No data yet for {escape(title)}.</p>'
    top = max(max(v) for v in series.values()) or 1.0
    sx = _scale(edges[0], edges[-1], PAD, W - 12)
    sy = _scale(0.0, top * 1.1, H - PAD, 12)
    body = []
    for colour, (name, shares) in zip(COLOURS, series.items()):
        path = [f"M{sx(edges[0]):.1f},{sy(0):.1f}"]
        for i, share in enumerate(shares):
            path.append(
                f"L{sx(edges[i]):.1f},{sy(share):.1f}L{sx(edges[i + 1]):.1f},{sy(share):.1f}"
            )
        body.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        body.extend(
            f'<circle class="point" data-series="{escape(name)}" data-y="{share:.6g}" '
            f'cx="{sx((edges[i] + edges[i + 1]) / 2):.1f}" cy="{sy(share):.1f}" r="1.8" fill="{colour}"/>'
            for i, share in enumerate(shares)
        )
    body.extend(
        f'<text x="{PAD + 8 + 150 * i}" y="{H - 8}" font-size="11" fill="{c}">{escape(n)}</text>'
        for i, (c, n) in enumerate(zip(COLOURS, series))
    )
    return _frame("".join(body), title, "histogram")


def neg_log10(p: float) -> float:
    return -math.log10(max(p, 1e-12))
