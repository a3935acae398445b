"""Defect subtypes painted onto the apple's skin (albedo and gloss), each with its own look.

Shapes are drawn in surface coordinates around a point on the visible hemisphere, so a defect
near the rim is foreshortened like a real one. Every mask is multiplied by the apple's coverage,
so no defect ever paints the belt. Work happens inside the defect's bounding window only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from visionline.synth._config import Subtype


@dataclass
class Surface:
    """The apple as the defect painters see it (arrays are modified in place)."""

    albedo: np.ndarray  # (3, S, S), planar so per-pixel weights broadcast cheaply
    gloss: np.ndarray  # (S, S) specular gain
    alpha: np.ndarray  # (S, S) apple coverage
    mask: np.ndarray  # (S, S) defect mask, accumulated
    mid: np.ndarray  # (S, S) mid-frequency noise
    fine: np.ndarray  # (S, S) grain noise
    px: np.ndarray  # pixel centres 0.5, 1.5, ... (at least as long as each side)
    cx: float  # apple centre, px, in the albedo's own frame
    cy: float
    radius: float  # apple radius, px
    cavity: tuple[float, float]  # stem cavity, apple-radius units


@dataclass
class _Window:
    rows: slice
    cols: slice
    su: np.ndarray  # surface coordinates, apple-radius units
    sv: np.ndarray
    d: np.ndarray
    pixel: float  # one pixel in apple-radius units


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _place(rng: np.random.Generator, surface: Surface, extent: float) -> tuple[_Window, dict]:
    """Pick a spot away from the stem cavity and build the window around it."""
    tu, tv = surface.cavity
    for _ in range(24):
        rn0 = math.sqrt(rng.uniform(0.0, 0.7**2))
        angle = rng.uniform(0.0, 2.0 * math.pi)
        pu, pv = rn0 * math.cos(angle), rn0 * math.sin(angle)
        if math.hypot(pu - tu, pv - tv) > 0.3 + 0.4 * extent:
            break
    z0 = math.sqrt(max(1.0 - rn0 * rn0, 0.05))
    ca, sa = math.cos(angle), math.sin(angle)
    r_px = surface.radius
    centre_x = surface.cx + r_px * pu
    centre_y = surface.cy + r_px * pv
    half = extent * r_px + 2.0
    height, width = surface.albedo.shape[1:]
    y0, y1 = max(0, int(centre_y - half)), min(height, int(centre_y + half) + 2)
    x0, x1 = max(0, int(centre_x - half)), min(width, int(centre_x + half) + 2)
    y0, x0 = min(y0, max(y1 - 1, 0)), min(x0, max(x1 - 1, 0))
    lx = ((surface.px[x0:x1] - centre_x) / r_px)[None, :]
    ly = ((surface.px[y0:y1] - centre_y) / r_px)[:, None]
    su = (lx * ca + ly * sa) / z0
    sv = ly * ca - lx * sa
    window = _Window(slice(y0, y1), slice(x0, x1), su, sv, np.sqrt(su * su + sv * sv), 1.0 / r_px)
    where = {"defect_x": round(centre_x, 2), "defect_y": round(centre_y, 2)}
    return window, where


def _blend(albedo: np.ndarray, colour, weight: np.ndarray) -> None:
    albedo += (np.asarray(colour, dtype=np.float32)[:, None, None] - albedo) * weight[None]


def _bruise(rng, s, w, a, gloss, mid, fine) -> tuple[np.ndarray, float]:
    radius = _lerp(0.10, 0.46, s) * rng.uniform(0.8, 1.2)
    dn = w.d / radius * (1.0 + 0.45 * (mid - 0.5))
    m = _smooth((1.0 - dn) / 0.55)
    amp = _lerp(0.10, 0.48, s)
    darker = a * (1.0 - amp * m)[None]
    lum = darker.mean(axis=0, keepdims=True)
    desat = _lerp(0.25, 0.7, s) * m[None]
    tinted = darker + (lum * np.float32([1.05, 0.85, 0.6])[:, None, None] - darker) * desat
    a[...] = tinted
    gloss *= 1.0 - 0.6 * m
    return m, radius


def _rot(rng, s, w, a, gloss, mid, fine) -> tuple[np.ndarray, float]:
    radius = _lerp(0.10, 0.5, s) * rng.uniform(0.85, 1.15)
    dn = w.d / radius * (1.0 + 0.25 * (mid - 0.5))
    edge = max(0.08, 1.5 * w.pixel / radius)
    m = _smooth((1.0 - dn) / edge)
    halo = _smooth((1.3 - dn) / 0.3) * (1.0 - m)
    core = _smooth(1.0 - dn / 0.5)
    rings = 0.5 + 0.5 * np.cos(2.0 * math.pi * dn * rng.uniform(2.5, 4.5))
    brown = np.float32([0.46, 0.28, 0.10]) * np.float32(rng.uniform(0.85, 1.1))
    colour = brown[:, None, None] * (0.78 + 0.4 * rings * (0.3 + 0.7 * s))[None]
    colour = colour + (np.float32([0.14, 0.08, 0.04])[:, None, None] - colour) * core[None]
    colour = colour * (0.85 + 0.3 * fine)[None]
    strength = _lerp(0.45, 1.0, s)
    a += (colour - a) * (m * strength)[None]
    a *= (1.0 - 0.3 * strength * halo)[None]
    gloss *= 1.0 - 0.9 * m
    return np.maximum(m, 0.5 * halo), radius


def _scab(rng, s, w, a, gloss, mid, fine) -> tuple[np.ndarray, float]:
    cluster = _lerp(0.08, 0.38, s) * rng.uniform(0.8, 1.2)
    count = round(_lerp(3, 28, s))
    centres = rng.normal(0.0, cluster * 0.45, (count, 2)).astype(np.float32)
    radii = rng.uniform(0.02, 0.055, count).astype(np.float32) * _lerp(0.7, 1.6, s)
    radii = np.maximum(radii, 0.8 * w.pixel)
    du = w.su[None] - centres[:, 0, None, None]
    dv = w.sv[None] - centres[:, 1, None, None]
    nearest = (np.sqrt(du * du + dv * dv) / radii[:, None, None]).min(axis=0)
    m = np.clip((1.0 - nearest) / 0.45 + 0.3, 0.0, 1.0) * np.clip(0.45 + 1.1 * fine, 0.0, 1.0)
    halo = _smooth((2.0 - nearest) / 1.0) * (1.0 - m)
    strength = _lerp(0.55, 0.95, s)
    _blend(a, (0.52, 0.44, 0.26), halo * 0.3 * strength)
    _blend(a, (0.17, 0.16, 0.08), m * strength)
    gloss *= 1.0 - 0.8 * m
    return np.maximum(m, 0.3 * halo), cluster + float(radii.max())


def _cut(rng, s, w, a, gloss, mid, fine) -> tuple[np.ndarray, float]:
    length = _lerp(0.18, 0.8, s) * rng.uniform(0.85, 1.15)
    width = max(_lerp(0.010, 0.045, s), 0.55 * w.pixel)
    beta = rng.uniform(0.0, math.pi)
    bend = rng.uniform(-1.6, 1.6)
    cb, sb = math.cos(beta), math.sin(beta)
    p = w.su * cb + w.sv * sb
    q = w.sv * cb - w.su * sb - bend * (p * p - length * length / 4.0)
    t = np.clip(2.0 * p / length, -1.0, 1.0)
    local = width * (0.3 + 0.7 * np.sqrt(1.0 - t * t))
    beyond = np.maximum(np.abs(p) - length / 2.0, 0.0)
    dist = np.sqrt(beyond * beyond + q * q)
    core = np.clip((local - dist) / w.pixel + 0.5, 0.0, 1.0)
    rim = np.clip(1.0 - np.abs(dist - 1.9 * local) / (1.1 * local + w.pixel), 0.0, 1.0)
    rim *= 1.0 - core
    strength = _lerp(0.6, 1.0, s)
    _blend(a, (0.93, 0.86, 0.62), rim * 0.65 * strength)
    _blend(a, (0.20, 0.11, 0.05), core * strength)
    gloss *= 1.0 - 0.7 * core
    return np.maximum(core, rim), length / 2.0 + 3.0 * width


def _insect_hole(rng, s, w, a, gloss, mid, fine) -> tuple[np.ndarray, float]:
    radius = max(_lerp(0.022, 0.085, s) * rng.uniform(0.85, 1.15), 0.9 * w.pixel)
    dn = w.d / radius
    core = np.clip((1.0 - dn) * radius / w.pixel + 0.5, 0.0, 1.0)
    lip = np.clip(1.0 - np.abs(dn - 1.35) / 0.45, 0.0, 1.0) * (1.0 - core)
    ring = np.clip(1.0 - np.abs(dn - 2.3) / 1.1, 0.0, 1.0) * (1.0 - core)
    strength = _lerp(0.6, 1.0, s)
    _blend(a, (0.50, 0.26, 0.10), ring * 0.55 * strength)
    _blend(a, (0.85, 0.72, 0.45), lip * 0.35 * strength)
    _blend(a, (0.05, 0.03, 0.02), core * strength)
    gloss *= 1.0 - core
    return np.maximum(core, 0.6 * ring), 3.5 * radius


VISIBLE_CHANGE = 0.06
"""Smallest albedo change (0-1 scale) counted as visible: about 4x the sensor noise once shaded,
more than JPEG at quality 90 keeps of a one-pixel speck."""
MIN_VISIBLE_PX = 4
"""A defect that changes fewer pixels than this by `VISIBLE_CHANGE` is too faint to see by
construction (a one-pixel dot or a barely darker patch): the line marks it `faint`."""


_Painter = Callable[..., tuple[np.ndarray, float]]
_PAINTERS: dict[Subtype, tuple[float, _Painter]] = {
    # subtype: (largest extent in apple radii, painter)
    Subtype.BRUISE: (0.8, _bruise),
    Subtype.ROT: (0.75, _rot),
    Subtype.SCAB: (0.7, _scab),
    Subtype.CUT: (0.65, _cut),
    Subtype.INSECT_HOLE: (0.34, _insect_hole),
}


def paint_defect(
    rng: np.random.Generator, surface: Surface, subtype: Subtype, severity: float, hard: bool
) -> dict:
    """Paint one defect; a `hard` one keeps its shape but loses most of its contrast. Returns
    where it is, its reach and `visible_px`, the pixels it changed by at least `VISIBLE_CHANGE`."""
    extent, painter = _PAINTERS[subtype]
    window, where = _place(rng, surface, extent * (0.5 + 0.5 * severity))
    rows, cols = window.rows, window.cols
    a = surface.albedo[:, rows, cols]
    before = a.copy()
    gloss = surface.gloss[rows, cols]
    gloss_before = gloss.copy()
    mask, reach = painter(
        rng, severity, window, a, gloss, surface.mid[rows, cols], surface.fine[rows, cols]
    )
    coverage = surface.alpha[rows, cols]
    keep = (coverage * (0.35 if hard else 1.0)).astype(np.float32)
    a[...] = before + (a - before) * keep[None]
    gloss[...] = gloss_before + (gloss - gloss_before) * keep
    surface.mask[rows, cols] = np.maximum(surface.mask[rows, cols], mask * coverage)
    where["defect_radius"] = round(reach * surface.radius, 2)
    where["visible_px"] = int((np.abs(a - before).max(axis=0) >= VISIBLE_CHANGE).sum())
    return where
