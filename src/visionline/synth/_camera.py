"""The optics and sensor of the line camera, and the drifts that corrupt them over time."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter

from visionline.synth._config import CameraConfig, Drift

_NOISE_SEED = 7_2026


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """RGB of a black-body light at `kelvin` (Tanner Helland's fit), each channel in [0, 1]."""
    t = kelvin / 100.0
    if t <= 66:
        r = 255.0
        g = 99.4708025861 * math.log(t) - 161.1195681661
        b = 0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307
    else:
        r = 329.698727446 * (t - 60) ** -0.1332047592
        g = 288.1221695283 * (t - 60) ** -0.0755148492
        b = 255.0
    return np.clip(np.float32([r, g, b]), 1.0, 255.0) / 255.0


@dataclass(frozen=True)
class CameraState:
    """The concrete camera and light of one image (config + jitter + drift), kept as metadata."""

    exposure: float
    color_temperature: float
    white_balance: float
    noise: float
    jpeg_quality: int
    motion_blur: float
    defocus_blur: float
    vignetting: float
    light_azimuth: float
    light_elevation: float
    lens_haze: float = 0.0
    lens_smudge: float = 0.0

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def sample_camera(
    rng: np.random.Generator, camera: CameraConfig, drift: Drift | None, strength: float
) -> CameraState:
    """Jitter the configured camera per image, then apply the lighting and lens drifts."""
    j = camera.jitter
    exposure = camera.exposure * math.exp(j * rng.normal())
    temperature = camera.color_temperature * (1.0 + 0.5 * j * rng.normal())
    azimuth = (camera.light_azimuth + 150.0 * j * rng.normal()) % 360.0
    elevation = float(np.clip(camera.light_elevation + 60.0 * j * rng.normal(), 10.0, 90.0))
    haze = smudge = 0.0
    if drift is Drift.LIGHTING:
        exposure *= 1.0 - 0.45 * strength
        temperature -= 2300.0 * strength
    elif drift is Drift.DIRTY_LENS:
        haze = 0.38 * strength
        smudge = strength
    return CameraState(
        exposure=exposure,
        color_temperature=max(2000.0, temperature),
        white_balance=camera.white_balance,
        noise=camera.noise * math.exp(0.5 * j * rng.normal()),
        jpeg_quality=camera.jpeg_quality,
        motion_blur=camera.motion_blur,
        defocus_blur=camera.defocus_blur,
        vignetting=camera.vignetting,
        light_azimuth=azimuth,
        light_elevation=elevation,
        lens_haze=haze,
        lens_smudge=smudge,
    )


def _gaussian(planar: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a planar (3, S, S) float image through Pillow's C implementation."""
    hwc = (np.clip(planar, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    blurred = Image.fromarray(np.ascontiguousarray(hwc)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, dtype=np.float32).transpose(2, 0, 1) * np.float32(1.0 / 255.0)


def _motion(planar: np.ndarray, length: float) -> np.ndarray:
    """Box blur along the belt (image rows), O(1) per pixel via a cumulative sum."""
    n = round(length)
    if n < 2:
        return planar
    before, after = n // 2, n - n // 2 - 1
    first, last = planar[:, :1], planar[:, -1:]
    padded = np.concatenate([first.repeat(before, 1), planar, last.repeat(after, 1)], axis=1)
    total = np.concatenate([np.zeros_like(first), np.cumsum(padded, axis=1)], axis=1)
    return (total[:, n:] - total[:, :-n]) / np.float32(n)


class Camera:
    """Lens and sensor for one image size; precomputes vignetting, noise and smudge grids."""

    def __init__(self, size: int) -> None:
        self.size = size
        c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        self._r2 = (c[None, :] ** 2 + c[:, None] ** 2) * 2.0  # 1 at the corners
        self._grid = c + 0.5
        self._noise = np.random.default_rng(_NOISE_SEED + size).standard_normal(
            (3, 2 * size, 2 * size), dtype=np.float32
        )
        self._smudges: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _sensor_noise(self, rng: np.random.Generator) -> np.ndarray:
        """Unit Gaussian noise (3, S, S): a random crop and flip of a fixed bank, far cheaper
        than drawing fresh normals for every image."""
        oy, ox = rng.integers(0, self.size, 2)
        view = self._noise[:, oy : oy + self.size, ox : ox + self.size]
        flip = int(rng.integers(0, 4))
        if flip & 1:
            view = view[:, ::-1]
        if flip & 2:
            view = view[:, :, ::-1]
        return view

    def _smudge_mask(self, seed: int, strength: float) -> np.ndarray:
        if seed not in self._smudges:
            rng = np.random.default_rng([seed, 0x5D])
            count = int(rng.integers(4, 8))
            self._smudges[seed] = (
                rng.uniform(0.05, 0.95, (count, 2)).astype(np.float32),
                rng.uniform(0.07, 0.2, count).astype(np.float32),
            )
        centres, radii = self._smudges[seed]
        g = self._grid
        mask = np.zeros((self.size, self.size), dtype=np.float32)
        for (x, y), r in zip(centres, radii * (0.3 + 0.7 * strength), strict=True):
            mask += np.exp(-(((g[None, :] - x) ** 2 + (g[:, None] - y) ** 2) / (r * r)))
        return np.clip(mask, 0.0, 1.0)

    def capture(
        self, scene: np.ndarray, state: CameraState, rng: np.random.Generator, smudge_seed: int
    ) -> np.ndarray:
        """Planar scene radiance (3, S, S) → (S, S, 3) uint8 RGB as the sensor records it."""
        px = self.size / 128.0
        light = kelvin_rgb(state.color_temperature) / kelvin_rgb(state.white_balance)
        image = scene * (light * np.float32(state.exposure))[:, None, None]
        if state.lens_haze > 0 or state.lens_smudge > 0:
            veil = (np.float32(0.25) + 0.6 * image.mean(axis=(1, 2)))[:, None, None]
            blurred = _gaussian(image, (0.4 + 1.6 * state.lens_smudge) * px)
            hazy = blurred + (veil - blurred) * np.float32(state.lens_haze)
            if state.lens_smudge > 0:
                smeared = _gaussian(image, (1.5 + 3.5 * state.lens_smudge) * px)
                smeared = smeared + (veil - smeared) * np.float32(0.55)
                weight = self._smudge_mask(smudge_seed, state.lens_smudge)[None]
                hazy = hazy + (smeared - hazy) * (weight * np.float32(0.85 * state.lens_smudge))
            image = hazy
        if state.defocus_blur > 0:
            image = _gaussian(image, state.defocus_blur * px)
        if state.motion_blur > 0:
            image = _motion(image, state.motion_blur * px)
        if state.vignetting > 0:
            image = image * (1.0 - np.float32(state.vignetting) * self._r2)[None]
        if state.noise > 0:
            sigma = np.float32(state.noise) * np.sqrt(np.float32(0.25) + np.maximum(image, 0.0))
            image = image + sigma * self._sensor_noise(rng)
        pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return np.ascontiguousarray(pixels.transpose(1, 2, 0))
