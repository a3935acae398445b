"""One apple on the conveyor, seen from above: geometry, skin, shading, defect, stem and belt.

Everything is vectorised numpy on (S, S) grids plus a few Pillow filters; there is no per-pixel
Python loop, so a 128×128 image takes a few milliseconds on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from visionline.errors import ConfigError
from visionline.synth._camera import Camera, sample_camera
from visionline.synth._config import MAX_SIZE, MIN_SIZE, CameraConfig, Drift, Subtype, Variety
from visionline.synth._defects import MIN_VISIBLE_PX, Surface, paint_defect
from visionline.synth._textures import TextureBank, TextureCrop


def severity_level(severity: float) -> str:
    """Bucket a severity in [0, 1]: subtle, moderate or obvious."""
    if severity < 1 / 3:
        return "subtle"
    return "moderate" if severity < 2 / 3 else "obvious"


@dataclass(frozen=True)
class AppleSpec:
    """What to render; everything else (pose, texture, jitter) comes from the generator."""

    variety: Variety = Variety.RED
    subtype: Subtype | None = None
    severity: float = 0.5
    hard: bool = False
    camera: CameraConfig = field(default_factory=CameraConfig)
    drift: Drift | None = None
    drift_strength: float = 0.0
    stem_probability: float = 0.6
    smudge_seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "variety", Variety(self.variety))
            if self.subtype is not None:
                object.__setattr__(self, "subtype", Subtype(self.subtype))
            if self.drift is not None:
                object.__setattr__(self, "drift", Drift(self.drift))
        except ValueError as exc:
            raise ConfigError(f"{exc}; use one of the Variety, Subtype or Drift values.") from None
        for name in ("severity", "drift_strength", "stem_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"AppleSpec {name} must be between 0 and 1, not {getattr(self, name)}."
                )


@dataclass(frozen=True)
class RenderResult:
    """The rendered pixels, the masks a segmentation model could use, and the metadata."""

    pixels: np.ndarray  # (S, S, 3) uint8
    apple_mask: np.ndarray  # (S, S) float32 coverage in [0, 1]
    defect_mask: np.ndarray  # (S, S) float32 in [0, 1]
    metadata: dict

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


def _mix(base, other, weight: np.ndarray) -> np.ndarray:
    """Planar (3, S, S) blend of two colours by a per-pixel weight."""
    base = np.asarray(base, dtype=np.float32)[:, None, None]
    return base + (np.asarray(other, dtype=np.float32)[:, None, None] - base) * weight[None]


def _toward(planar: np.ndarray, colour, weight: np.ndarray) -> np.ndarray:
    """Blend a planar image toward one colour by a per-pixel weight."""
    return planar + (np.asarray(colour, dtype=np.float32)[:, None, None] - planar) * weight[None]


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _jitter(g: np.random.Generator, colour: tuple[float, float, float], amount: float = 0.06):
    return np.clip(np.float32(colour) * (1.0 + amount * g.normal(size=3)).astype(np.float32), 0, 1)


class AppleRenderer:
    """Renders apples of one image size; grids and texture bank are built once and reused."""

    def __init__(self, size: int = 128) -> None:
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ConfigError(
                f"image size {size} is out of range; use a size from {MIN_SIZE} to {MAX_SIZE}."
            )
        self.size = size
        self._px = np.arange(size, dtype=np.float32) + np.float32(0.5)
        self._bank = TextureBank(size)
        self._camera = Camera(size)

    def render(self, rng: np.random.Generator, spec: AppleSpec) -> tuple[Image.Image, dict]:
        """Render one apple: a PIL RGB image (before JPEG) and its metadata."""
        result = self.render_arrays(rng, spec)
        return result.image(), result.metadata

    def render_arrays(self, rng: np.random.Generator, spec: AppleSpec) -> RenderResult:
        """Render one apple with its masks. The defect draws from its own child generator, so
        the same `rng` state with and without a defect gives the same apple."""
        g_shape, g_skin, g_defect, g_camera = (
            np.random.default_rng(s) for s in rng.integers(0, 2**63 - 1, 4)
        )
        strength = spec.drift_strength if spec.drift is not None else 0.0
        state = sample_camera(g_camera, spec.camera, spec.drift, strength)
        geo = self._geometry(g_shape, spec, strength)
        tex = self._bank.crop(g_skin)
        S = self.size

        # the apple is computed inside its bounding box only, in box-local pixel coordinates
        r = geo["radius"]
        reach = r * (1.0 + geo["outline_amplitude"]) + 2.0
        x0, x1 = max(0, int(geo["cx"] - reach)), min(S, int(geo["cx"] + reach) + 2)
        y0, y1 = max(0, int(geo["cy"] - reach)), min(S, int(geo["cy"] + reach) + 2)
        box = (slice(y0, y1), slice(x0, x1))
        cx, cy = geo["cx"] - x0, geo["cy"] - y0
        skin_tex = TextureCrop(tex.low[box], tex.mid[box], tex.fine[box], tex.dots[box])
        dx = (self._px[: x1 - x0] - cx)[None, :]
        dy = (self._px[: y1 - y0] - cy)[:, None]
        rho = np.sqrt(dx * dx + dy * dy) + np.float32(1e-3)
        c, s = dx / rho, dy / rho
        c2, s2 = c * c - s * s, 2.0 * c * s
        c3, s3 = c2 * c - s2 * s, s2 * c + c2 * s
        c5, s5 = c3 * c2 - s3 * s2, s3 * c2 + c3 * s2
        h2, h3, h5 = geo["harmonics"]
        outline = np.float32(r) * (
            1.0 + h2[0] * c2 + h2[1] * s2 + h3[0] * c3 + h3[1] * s3 + h5[0] * c5 + h5[1] * s5
        )
        alpha = np.clip(outline - rho + 0.5, 0.0, 1.0)
        rn = rho / outline
        u, v = c * rn, s * rn
        h = np.sqrt(np.clip(1.0 - rn * rn, 0.004, 1.0))

        # stem cavity: a Gaussian dip, foreshortened along the tilt, that bends the normals
        tu, tv = geo["tilt"]
        tilt = math.hypot(tu, tv)
        ex, ey = (tu / tilt, tv / tilt) if tilt > 1e-6 else (1.0, 0.0)
        zt2 = max(1.0 - tilt * tilt, 0.1)
        du, dv = u - tu, v - tv
        along, across = du * ex + dv * ey, dv * ex - du * ey
        sigma2 = geo["cavity_radius"] ** 2
        q = (along * along / zt2 + across * across) / sigma2
        pit = np.exp(-q)
        dip = geo["cavity_depth"] * pit
        nx = u / h - dip * (2.0 * (along * ex / zt2 - across * ey) / sigma2)
        ny = v / h - dip * (2.0 * (along * ey / zt2 + across * ex) / sigma2)
        inv = 1.0 / np.sqrt(nx * nx + ny * ny + 1.0)

        az, el = math.radians(state.light_azimuth), math.radians(state.light_elevation)
        light = np.float32([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        half = light + np.float32([0.0, 0.0, 1.0])
        half /= np.linalg.norm(half)
        diffuse = np.clip((nx * light[0] + ny * light[1] + light[2]) * inv, 0.0, 1.0)
        highlight = np.clip((nx * half[0] + ny * half[1] + half[2]) * inv, 0.0, 1.0)

        albedo, gloss_level, shininess = self._skin(g_skin, spec.variety, skin_tex, u, v, du, dv, q)
        gloss = np.full(alpha.shape, gloss_level, dtype=np.float32)
        defect_box = np.zeros(alpha.shape, dtype=np.float32)
        where: dict = {}
        if spec.subtype is not None:
            surface = Surface(
                albedo=albedo,
                gloss=gloss,
                alpha=alpha,
                mask=defect_box,
                mid=skin_tex.mid,
                fine=skin_tex.fine,
                px=self._px,
                cx=cx,
                cy=cy,
                radius=r,
                cavity=(tu, tv),
            )
            where = paint_defect(g_defect, surface, spec.subtype, spec.severity, spec.hard)
            where["defect_x"] = round(where["defect_x"] + x0, 2)
            where["defect_y"] = round(where["defect_y"] + y0, 2)

        for _ in range(int(math.log2(shininess))):
            highlight = highlight * highlight
        shade = (0.26 + 0.74 * diffuse) * (1.0 - 0.5 * pit)
        apple = albedo * shade[None]
        apple += (gloss * highlight)[None] * np.float32([1.0, 1.0, 0.94])[:, None, None]
        if geo["stem"]:
            self._stem(apple, geo, cx, cy, light, alpha)

        scene = self._belt(g_shape, geo, tex, light, state.light_elevation)
        window = scene[:, y0:y1, x0:x1]
        window += (apple - window) * alpha[None]
        pixels = self._camera.capture(scene, state, g_camera, spec.smudge_seed)
        apple_mask = np.zeros((S, S), dtype=np.float32)
        apple_mask[box] = alpha
        defect_mask = np.zeros((S, S), dtype=np.float32)
        defect_mask[box] = defect_box
        meta = where

        meta = {
            "variety": spec.variety.value,
            "label": "good" if spec.subtype is None else "defect",
            "subtype": None if spec.subtype is None else spec.subtype.value,
            "severity": None if spec.subtype is None else round(spec.severity, 4),
            "severity_level": None if spec.subtype is None else severity_level(spec.severity),
            "hard": bool(spec.hard and spec.subtype is not None),
            "visible_px": meta.get("visible_px"),
            "faint": spec.subtype is not None
            and (spec.hard or meta["visible_px"] < MIN_VISIBLE_PX),
            "defect_x": meta.get("defect_x"),
            "defect_y": meta.get("defect_y"),
            "defect_radius": meta.get("defect_radius"),
            "center_x": round(geo["cx"], 2),
            "center_y": round(geo["cy"], 2),
            "radius": round(geo["radius"], 2),
            "tilt": round(tilt, 3),
            "stem": geo["stem"],
            "drift": None if spec.drift is None else spec.drift.value,
            "drift_strength": round(strength, 4),
            **state.to_dict(),
        }
        return RenderResult(pixels, apple_mask, defect_mask, meta)

    def _geometry(self, g: np.random.Generator, spec: AppleSpec, strength: float) -> dict:
        S = self.size
        radius = g.uniform(0.29, 0.37)
        cx, cy = 0.5 + g.uniform(-0.06, 0.06, 2)
        zoom = 1.0
        if spec.drift is Drift.CAMERA_SHIFT:
            zoom = 1.0 + 0.35 * strength
            radius *= zoom
            cx, cy = cx + 0.11 * strength, cy - 0.07 * strength
        phases = g.uniform(0, 2 * math.pi, 3)
        amps = (g.uniform(0, 0.045), g.uniform(0, 0.025), g.uniform(0, 0.02))
        harmonics = tuple(
            (np.float32(a * math.cos(p)), np.float32(a * math.sin(p)))
            for a, p in zip(amps, phases, strict=True)
        )
        tilt_mag = math.sqrt(g.uniform(0, 0.62**2))
        tilt_dir = g.uniform(0, 2 * math.pi)
        stem = bool(g.random() < spec.stem_probability)
        return {
            "cx": float(cx * S),
            "cy": float(cy * S),
            "radius": float(radius * S),
            "zoom": zoom,
            "harmonics": harmonics,
            "outline_amplitude": sum(amps),
            "tilt": (tilt_mag * math.cos(tilt_dir), tilt_mag * math.sin(tilt_dir)),
            "cavity_radius": g.uniform(0.14, 0.21),
            "cavity_depth": g.uniform(0.12, 0.24),
            "stem": stem,
            "stem_angle": tilt_dir + g.normal(0, 0.7),
            "stem_length": g.uniform(0.16, 0.3) * (0.45 + tilt_mag),
            "stem_width": g.uniform(0.03, 0.045),
        }

    def _stripes(self, g: np.random.Generator, tex: TextureCrop, du, dv, waves: float):
        """Streaks radiating from the stem cavity, made wavy by the mid-frequency noise."""
        n = 96
        table = g.random(n + 1).astype(np.float32)
        table[-1] = table[0]
        angle = np.arctan2(dv, du) * np.float32(n / (2 * math.pi)) + np.float32(n / 2)
        position = (angle + waves * (tex.mid - 0.5)) % n
        stripes = np.interp(position, np.arange(n + 1, dtype=np.float32), table)
        radial = np.clip(np.sqrt(du * du + dv * dv) / 0.45, 0.0, 1.0)
        return _smooth((stripes.astype(np.float32) - 0.4) / 0.4) * radial

    def _skin(self, g, variety: Variety, tex: TextureCrop, u, v, du, dv, q):
        """Planar albedo (3, S, S), gloss and shininess of one variety's skin."""
        near_stem = np.exp(-q * 0.3)
        if variety is Variety.RED:
            a = _mix(_jitter(g, (0.60, 0.07, 0.08)), _jitter(g, (0.32, 0.03, 0.06)), 0.8 * tex.low)
            a = _toward(a, (0.30, 0.02, 0.05), 0.35 * self._stripes(g, tex, du, dv, 1.0))
            a = _toward(a, (0.76, 0.60, 0.22), 0.5 * near_stem)
            a = _toward(a, (0.80, 0.62, 0.40), 0.35 * tex.dots)
            gloss, shininess = 0.45, 32
        elif variety is Variety.GREEN:
            a = _mix(_jitter(g, (0.46, 0.70, 0.20)), _jitter(g, (0.62, 0.78, 0.30)), tex.low)
            a = a * (0.85 + 0.25 * tex.mid)[None]
            a = _toward(a, (0.84, 0.90, 0.66), 0.45 * tex.dots)
            gloss, shininess = 0.5, 32
        elif variety is Variety.YELLOW:
            a = _mix(_jitter(g, (0.92, 0.77, 0.26)), _jitter(g, (0.80, 0.78, 0.32)), tex.low)
            a = _toward(a, (0.60, 0.45, 0.18), 0.4 * tex.dots)
            if g.random() < 0.6:
                russet = np.clip(near_stem * 1.5 - 0.35 + 0.8 * (tex.mid - 0.5), 0.0, 1.0)
                colour = np.float32([0.62, 0.46, 0.24])[:, None, None] * (0.85 + 0.3 * tex.fine)
                a = a + (colour - a) * (0.85 * russet)[None]
            gloss, shininess = 0.3, 16
        elif variety is Variety.BLUSH:
            ground = (0.80, 0.77, 0.30) if g.random() < 0.5 else (0.64, 0.75, 0.26)
            angle = g.uniform(0, 2 * math.pi)
            side = u * math.cos(angle) + v * math.sin(angle) + g.uniform(-0.3, 0.5)
            blush = _smooth((side + 0.8 * (tex.low - 0.5)) / 0.6 + 0.5)
            blush = blush * (0.75 + 0.25 * self._stripes(g, tex, du, dv, 1.0))
            a = _mix(_jitter(g, ground), _jitter(g, (0.76, 0.14, 0.10)), 0.92 * blush)
            a = _toward(a, (0.90, 0.85, 0.60), 0.3 * tex.dots)
            gloss, shininess = 0.35, 32
        elif variety is Variety.STRIPED:
            a = _mix(
                _jitter(g, (0.90, 0.72, 0.26)),
                _jitter(g, (0.84, 0.36, 0.14)),
                g.uniform(0.3, 0.7) * tex.low,
            )
            wash = 0.45 + 0.5 * tex.low
            a = _toward(
                a, _jitter(g, (0.72, 0.12, 0.08)), 0.8 * self._stripes(g, tex, du, dv, 2.5) * wash
            )
            a = _toward(a, (0.92, 0.84, 0.58), 0.3 * tex.dots)
            gloss, shininess = 0.35, 32
        else:  # russet: matte bronze skin with greenish patches
            a = _mix(
                _jitter(g, (0.62, 0.45, 0.24)),
                _jitter(g, (0.58, 0.60, 0.28)),
                _smooth((tex.low - 0.5) / 0.25),
            )
            a = _toward(a, (0.42, 0.30, 0.15), 0.45 * tex.mid)
            a = a * (0.75 + 0.5 * tex.fine)[None]
            a = _toward(a, (0.30, 0.22, 0.12), 0.3 * tex.dots)
            gloss, shininess = 0.06, 8
        a = a * (0.93 + 0.14 * tex.mid)[None]
        return np.clip(a, 0.0, 1.0).astype(np.float32), gloss, shininess

    def _stem(self, apple, geo: dict, cx: float, cy: float, light, alpha) -> None:
        """A short woody stem rising from the cavity, with its shadow on the skin."""
        r = geo["radius"]
        bx = cx + r * geo["tilt"][0]
        by = cy + r * geo["tilt"][1]
        length, width = geo["stem_length"] * r, max(geo["stem_width"] * r, 0.8)
        ca, sa = math.cos(geo["stem_angle"]), math.sin(geo["stem_angle"])
        reach = length + 4 * width + 2
        height, width_px = alpha.shape
        y0, y1 = max(0, int(by - reach)), min(height, int(by + reach) + 1)
        x0, x1 = max(0, int(bx - reach)), min(width_px, int(bx + reach) + 1)
        if y1 <= y0 or x1 <= x0:
            return
        lx = (self._px[x0:x1] - bx)[None, :]
        ly = (self._px[y0:y1] - by)[:, None]
        shift = 2.5 * width
        sx, sy = lx + light[0] * shift, ly + light[1] * shift

        def distance(x, y):
            t = np.clip(x * ca + y * sa, 0.0, length)
            ox, oy = x - t * ca, y - t * sa
            return np.sqrt(ox * ox + oy * oy), t / length

        window = apple[:, y0:y1, x0:x1]
        inside = alpha[y0:y1, x0:x1]
        shadow_d, _ = distance(sx, sy)
        shadow = np.clip((1.6 * width - shadow_d) / width, 0.0, 1.0) * inside
        window *= (1.0 - 0.45 * shadow)[None]
        d, t = distance(lx, ly)
        cover = np.clip(width - d + 0.5, 0.0, 1.0)
        across = np.sqrt(np.clip(1.0 - (d / width) ** 2, 0.0, 1.0))
        tone = (0.45 + 0.6 * across) * (0.7 + 0.3 * t)
        colour = np.float32([0.36, 0.25, 0.12])[:, None, None] * tone[None]
        window += (colour - window) * cover[None]

    def _belt(self, g, geo: dict, tex: TextureCrop, light: np.ndarray, elevation: float):
        """Dark roller conveyor (rollers across the image) with the apple's soft shadow."""
        S = self.size
        period = 0.27 * S * geo["zoom"]
        rel = ((self._px - g.uniform(0, period)) / period) % 1.0
        body = np.sin(np.pi * rel)
        gap = np.clip((np.minimum(rel, 1 - rel) - 0.02) / 0.05, 0.15, 1)
        colour = np.float32([0.12, 0.13, 0.15]) * np.float32(g.uniform(0.85, 1.15))
        rows = colour[:, None] * ((0.3 + 0.7 * body) * gap)[None] + 0.16 * body**12
        belt = rows[:, :, None] * (0.8 + 0.25 * tex.mid + 0.15 * tex.fine)[None]
        r = geo["radius"]
        offset = r * 0.45 / math.tan(math.radians(elevation))
        sx, sy = geo["cx"] - light[0] * offset, geo["cy"] - light[1] * offset
        reach = 1.25 * r + 2
        x0, x1 = max(0, int(sx - reach)), min(S, int(sx + reach) + 2)
        y0, y1 = max(0, int(sy - reach)), min(S, int(sy + reach) + 2)
        if x1 > x0 and y1 > y0:
            ddx = (self._px[x0:x1] - sx)[None, :]
            ddy = (self._px[y0:y1] - sy)[:, None]
            rs = np.sqrt(ddx * ddx + ddy * ddy) * np.float32(1.0 / r)
            belt[:, y0:y1, x0:x1] *= (1.0 - 0.75 * _smooth((1.2 - rs) / 0.4))[None]
        return belt.astype(np.float32, copy=False)


_RENDERERS: dict[int, AppleRenderer] = {}


def render_apple(
    rng: np.random.Generator, spec: AppleSpec, size: int = 128
) -> tuple[Image.Image, dict]:
    """Render one apple with a cached renderer for `size`."""
    if size not in _RENDERERS:
        _RENDERERS[size] = AppleRenderer(size)
    return _RENDERERS[size].render(rng, spec)
