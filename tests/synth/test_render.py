"""The renderer: determinism, metadata, defects inside the apple, camera and drift effects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visionline.errors import ConfigError
from visionline.synth import (
    AppleRenderer,
    AppleSpec,
    CameraConfig,
    Drift,
    Subtype,
    Variety,
    render_apple,
    severity_level,
)


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def sharpness(pixels: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: falls when an image gets blurred."""
    grey = pixels.astype(np.float64).mean(axis=-1)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def rgb_of(renderer: AppleRenderer, seed: int, spec: AppleSpec) -> np.ndarray:
    return renderer.render_arrays(np.random.default_rng(seed), spec).pixels


@pytest.mark.parametrize("variety", list(Variety))
@pytest.mark.parametrize("subtype", [None, *Subtype])
def test_same_seed_gives_identical_bytes(renderer, variety, subtype):
    spec = AppleSpec(variety=variety, subtype=subtype, severity=0.5)
    first, meta1 = renderer.render(np.random.default_rng(7), spec)
    second, meta2 = renderer.render(np.random.default_rng(7), spec)
    other, _ = renderer.render(np.random.default_rng(8), spec)
    assert jpeg_bytes(first) == jpeg_bytes(second)
    assert meta1 == meta2
    assert jpeg_bytes(first) != jpeg_bytes(other)


def test_fresh_renderer_matches_cached_one(renderer):
    spec = AppleSpec(variety=Variety.STRIPED, subtype=Subtype.ROT)
    ours, _ = renderer.render(np.random.default_rng(3), spec)
    again, _ = render_apple(np.random.default_rng(3), spec, size=96)
    assert np.array_equal(np.asarray(ours), np.asarray(again))


def test_metadata_records_ground_truth_and_conditions(renderer):
    spec = AppleSpec(variety=Variety.GREEN, subtype=Subtype.SCAB, severity=0.8)
    image, meta = renderer.render(np.random.default_rng(1), spec)
    assert image.size == (96, 96) and image.mode == "RGB"
    assert meta["variety"] == "green"
    assert meta["label"] == "defect" and meta["subtype"] == "scab"
    assert meta["severity"] == 0.8 and meta["severity_level"] == "obvious"
    assert meta["hard"] is False
    for key in (
        "exposure",
        "color_temperature",
        "noise",
        "jpeg_quality",
        "motion_blur",
        "defocus_blur",
        "vignetting",
        "center_x",
        "radius",
        "defect_x",
        "drift",
    ):
        assert key in meta
    good = renderer.render(np.random.default_rng(1), AppleSpec(variety=Variety.GREEN))[1]
    assert good["label"] == "good" and good["subtype"] is None and good["severity"] is None
    assert good["defect_x"] is None


def test_severity_levels():
    assert [severity_level(s) for s in (0.0, 0.32, 0.34, 0.66, 0.67, 1.0)] == [
        "subtle",
        "subtle",
        "moderate",
        "moderate",
        "obvious",
        "obvious",
    ]


@pytest.mark.parametrize("subtype", list(Subtype))
def test_each_defect_changes_pixels_inside_the_apple_only(renderer, subtype):
    for seed in range(6):
        good = renderer.render_arrays(np.random.default_rng(seed), AppleSpec())
        bad = renderer.render_arrays(
            np.random.default_rng(seed), AppleSpec(subtype=subtype, severity=0.7)
        )
        diff = np.abs(bad.pixels.astype(int) - good.pixels.astype(int)).max(axis=-1)
        changed = diff > 0
        assert changed.sum() > 3, "the defect must be visible"
        assert np.all(good.apple_mask[changed] > 0), "a defect painted the belt"
        assert np.all(bad.defect_mask[~(good.apple_mask > 0)] == 0)
        assert bad.defect_mask.max() > 0.5
        near = bad.defect_mask > 0.02
        assert diff[near].sum() >= 0.9 * diff.sum(), "changes lie where the mask says"


@pytest.mark.parametrize("subtype", list(Subtype))
def test_obvious_defects_change_more_than_subtle_and_hard_ones_least(renderer, subtype):
    def change(severity: float, hard: bool = False) -> float:
        total = 0.0
        for seed in range(8):
            good = rgb_of(renderer, seed, AppleSpec())
            bad = rgb_of(renderer, seed, AppleSpec(subtype=subtype, severity=severity, hard=hard))
            total += np.abs(bad.astype(int) - good.astype(int)).sum()
        return total

    subtle, obvious, hard = change(0.1), change(0.9), change(0.1, hard=True)
    assert obvious > 2 * subtle
    assert hard < 0.6 * subtle


def test_faint_marks_hard_defects_and_counts_the_pixels_a_defect_visibly_changes(renderer):
    def meta(severity: float, hard: bool = False) -> dict:
        spec = AppleSpec(subtype=Subtype.BRUISE, severity=severity, hard=hard)
        return renderer.render(np.random.default_rng(2), spec)[1]

    obvious, subtle, hard = meta(0.9), meta(0.1), meta(0.1, hard=True)
    assert obvious["visible_px"] > subtle["visible_px"] > hard["visible_px"]
    assert obvious["faint"] is False and subtle["faint"] is False
    assert hard["faint"] is True
    good = renderer.render(np.random.default_rng(2), AppleSpec())[1]
    assert good["faint"] is False and good["visible_px"] is None


def test_size_limits():
    with pytest.raises(ConfigError, match="32 to 512"):
        AppleRenderer(5000)
    with pytest.raises(ConfigError):
        AppleRenderer(16)
    image, _ = AppleRenderer(32).render(np.random.default_rng(0), AppleSpec(subtype=Subtype.CUT))
    assert image.size == (32, 32)


def test_exposure_and_colour_temperature(renderer):
    base = rgb_of(renderer, 5, AppleSpec(camera=CameraConfig(jitter=0)))
    bright = rgb_of(renderer, 5, AppleSpec(camera=CameraConfig(jitter=0, exposure=1.6)))
    warm = rgb_of(renderer, 5, AppleSpec(camera=CameraConfig(jitter=0, color_temperature=3200)))
    assert bright.mean() > base.mean() + 10
    ratio = lambda p: p[..., 0].mean() / max(p[..., 2].mean(), 1e-6)
    assert ratio(warm) > 1.3 * ratio(base)


def test_blur_noise_vignetting_and_jpeg_quality(renderer):
    plain = CameraConfig(jitter=0, noise=0, vignetting=0)
    base = rgb_of(renderer, 2, AppleSpec(camera=plain))
    defocus = rgb_of(renderer, 2, AppleSpec(camera=plain.model_copy(update={"defocus_blur": 3})))
    motion = rgb_of(renderer, 2, AppleSpec(camera=plain.model_copy(update={"motion_blur": 8})))
    noisy = rgb_of(renderer, 2, AppleSpec(camera=plain.model_copy(update={"noise": 0.06})))
    vignette = rgb_of(renderer, 2, AppleSpec(camera=plain.model_copy(update={"vignetting": 0.6})))
    assert sharpness(defocus) < 0.5 * sharpness(base)
    assert sharpness(motion) < 0.7 * sharpness(base)
    assert sharpness(noisy) > 1.5 * sharpness(base)
    corner = (slice(0, 12), slice(0, 12))
    assert vignette[corner].mean() < 0.75 * base[corner].mean()
    image = Image.fromarray(base)
    assert len(jpeg_bytes(image, 30)) < len(jpeg_bytes(image, 95))


def test_dirty_lens_lowers_sharpness_and_contrast(renderer):
    clean = [rgb_of(renderer, s, AppleSpec()) for s in range(5)]
    dirty = [
        rgb_of(renderer, s, AppleSpec(drift=Drift.DIRTY_LENS, drift_strength=1.0)) for s in range(5)
    ]
    half = [
        rgb_of(renderer, s, AppleSpec(drift=Drift.DIRTY_LENS, drift_strength=0.4)) for s in range(5)
    ]
    for c, h, d in zip(clean, half, dirty, strict=True):
        assert sharpness(d) < sharpness(h) < sharpness(c)
        assert d.astype(float).std() < h.astype(float).std() < c.astype(float).std()


def test_lighting_drift_dims_and_warms(renderer):
    normal = rgb_of(renderer, 4, AppleSpec(variety=Variety.GREEN))
    shifted = rgb_of(
        renderer, 4, AppleSpec(variety=Variety.GREEN, drift=Drift.LIGHTING, drift_strength=1.0)
    )
    assert shifted.mean() < 0.8 * normal.mean()
    ratio = lambda p: p[..., 0].mean() / max(p[..., 2].mean(), 1e-6)
    assert ratio(shifted) > ratio(normal)


def test_camera_shift_zooms_and_moves_the_apple(renderer):
    before = renderer.render_arrays(np.random.default_rng(9), AppleSpec())
    after = renderer.render_arrays(
        np.random.default_rng(9), AppleSpec(drift=Drift.CAMERA_SHIFT, drift_strength=1.0)
    )
    assert after.apple_mask.sum() > 1.4 * before.apple_mask.sum()
    assert after.metadata["radius"] > 1.3 * before.metadata["radius"]
    assert after.metadata["center_x"] > before.metadata["center_x"] + 5
    assert after.metadata["drift"] == "camera_shift" and after.metadata["drift_strength"] == 1.0


def test_varieties_have_distinct_colours(renderer):
    means = {}
    for variety in Variety:
        pixels = [
            renderer.render_arrays(np.random.default_rng(s), AppleSpec(variety=variety))
            for s in range(4)
        ]
        means[variety] = np.mean(
            [r.pixels[r.apple_mask > 0.9].mean(axis=0) for r in pixels], axis=0
        )
    red, green = means[Variety.RED], means[Variety.GREEN]
    assert red[0] > 1.8 * red[1] and green[1] > green[0] and green[1] > green[2]
    assert means[Variety.YELLOW][0] > 1.3 * means[Variety.YELLOW][2]
    assert means[Variety.RUSSET][0] < means[Variety.YELLOW][0]


def test_spec_accepts_strings_and_rejects_bad_values():
    spec = AppleSpec(variety="green", subtype="rot", drift="lighting", drift_strength=0.5)
    assert spec.variety is Variety.GREEN and spec.subtype is Subtype.ROT
    assert spec.drift is Drift.LIGHTING
    with pytest.raises(ConfigError, match="purple"):
        AppleSpec(variety="purple")
    with pytest.raises(ConfigError, match="severity"):
        AppleSpec(subtype=Subtype.CUT, severity=1.5)
