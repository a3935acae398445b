import numpy as np
import pytest
import torch

from visionline.anomaly import (
    AnomalyConfig,
    fit_detector,
    load_anomaly_config,
    load_anomaly_model,
    save_anomaly_model,
    score_images,
)
from visionline.anomaly._model import AnomalySpec
from visionline.anomaly._pixel import content_region
from visionline.errors import ConfigError, DataError, TrainingError
from visionline.preprocessing import ResizeMode

from .conftest import global_change, tile


@pytest.fixture(scope="module")
def fitted():
    config = AnomalyConfig(
        image_size=128,
        batch_size=8,
        max_bank=256,
        min_bank=16,
        coreset_ratio=0.1,
        stages=[2, 4],
        neighbourhood=3,
        resize_mode=ResizeMode.LETTERBOX,
        smoothing_sigma=4.0,  # pixels: the default 12 is for 224 px tiles, blurs small defects here
    )
    goods = [tile(seed)[0] for seed in range(6)]
    return fit_detector(goods, len(goods), config)


def test_defects_score_above_every_good_image_and_the_map_points_at_them(fitted):
    model, spec, stats = fitted
    goods = [tile(100 + seed)[0] for seed in range(4)]
    defects = [tile(200 + seed, defect=True) for seed in range(4)]
    good_scores, _ = score_images(model, spec.preprocessing, goods)
    defect_scores, maps = score_images(model, spec.preprocessing, [d[0] for d in defects])
    assert defect_scores.min() > good_scores.max()
    from visionline.data import mask_in_model_frame

    for amap, (_, mask) in zip(maps, defects):
        inside = mask_in_model_frame(np.asarray(mask) > 127, spec.preprocessing)
        peak = np.unravel_index(np.argmax(amap), amap.shape)
        assert inside[peak]
    assert stats.bank_size == 154 and stats.feature_dim == 40 + 112  # 10% of 6 × 16 × 16


def test_a_few_shot_fit_keeps_the_bank_floor_instead_of_a_ratio_of_almost_nothing():
    config = AnomalyConfig(image_size=128, batch_size=8)  # stages 3+4: 8 x 8 patches per image
    goods = [tile(seed)[0] for seed in range(6)]
    _, _, few = fit_detector(goods[:2], 2, config)
    _, _, more = fit_detector(goods, 6, config)
    assert few.bank_size == 2 * 64  # every patch: fewer than the floor of 256
    assert more.bank_size == 256  # 0.25% of 384 patches would be a bank of one


def test_the_spec_records_letterbox_autocontrast_and_the_offline_statistics(fitted):
    _, spec, _ = fitted
    prep = spec.preprocessing
    assert prep.resize_mode is ResizeMode.LETTERBOX and prep.autocontrast and prep.size == 128
    assert prep.mean == (0.498, 0.498, 0.498)
    region = content_region(96, 72, prep)
    assert region.sum() == 128 * 96 and region[16:112].all() and not region[:16].any()


def test_a_saved_model_scores_the_same_after_loading(fitted, tmp_path):
    model, spec, _ = fitted
    spec.threshold = 1.25
    path = save_anomaly_model(tmp_path / "model.pt", model, spec)
    loaded, loaded_spec = load_anomaly_model(path)
    images = [tile(7, defect=True)[0], tile(8)[0]]
    before, before_maps = score_images(model, spec.preprocessing, images)
    after, after_maps = score_images(loaded, loaded_spec.preprocessing, images)
    assert loaded_spec.threshold == 1.25 and loaded_spec.preprocessing == spec.preprocessing
    np.testing.assert_allclose(after, before, rtol=1e-5)
    np.testing.assert_allclose(after_maps, before_maps, rtol=1e-4, atol=1e-5)
    assert torch.equal(loaded.bank, model.bank)
    assert torch.equal(loaded.feature_scale, model.feature_scale)


def test_features_are_standardised_on_the_fit_patches_and_a_model_saved_before_loads(
    fitted, tmp_path
):
    model, spec, _ = fitted
    scale = model.feature_scale.flatten()
    assert (
        scale.shape == (152,)
        and (scale >= 1e-3).all()
        and not torch.allclose(scale, torch.ones(152))
    )
    images = [tile(9, defect=True)[0]]
    state = {
        k: v for k, v in model.state_dict().items() if k not in ("feature_mean", "feature_scale")
    }
    old = torch.load(save_anomaly_model(tmp_path / "m.pt", model, spec), weights_only=True)
    old["state_dict"] = state  # as written before standardisation existed: identity buffers
    torch.save(old, tmp_path / "old.pt")
    loaded, _ = load_anomaly_model(tmp_path / "old.pt")
    assert torch.equal(loaded.feature_scale.flatten(), torch.ones(152))
    assert torch.equal(loaded.feature_mean.flatten(), torch.zeros(152))
    scores, _ = score_images(loaded, spec.preprocessing, images)
    assert np.isfinite(scores).all()


def test_k_nearest_patch_scores_travel_with_the_model_and_old_specs_default_to_one(tmp_path):
    config = AnomalyConfig(
        image_size=64, coreset_ratio=1.0, score_neighbours=3, subtract_background=False
    )
    model, spec, _ = fit_detector([tile(1)[0], tile(2)[0]], 2, config)
    images = [tile(3)[0], tile(4, defect=True)[0]]
    loaded, loaded_spec = load_anomaly_model(save_anomaly_model(tmp_path / "m.pt", model, spec))
    assert loaded.score_neighbours == loaded_spec.score_neighbours == 3
    before, _ = score_images(model, spec.preprocessing, images)
    after, _ = score_images(loaded, loaded_spec.preprocessing, images)
    np.testing.assert_allclose(after, before, rtol=1e-5)
    model.score_neighbours = 1  # the mean over 3 neighbours is never below the nearest one
    nearest_only, _ = score_images(model, spec.preprocessing, images)
    assert (before >= nearest_only - 1e-5).all() and (before > nearest_only).any()
    old = spec.to_dict()
    del old["score_neighbours"]  # a spec written before k-nearest scores existed
    assert AnomalySpec.from_dict(old).score_neighbours == 1


def test_an_image_level_knn_is_fused_into_the_score_and_travels_with_the_model(fused, tmp_path):
    model, spec, stats = fused
    assert spec.image_neighbours == 3 and model.image_bank.shape == (10, stats.feature_dim)
    goods = [tile(100 + seed)[0] for seed in range(3)]
    changed = [global_change(seed) for seed in range(3)]
    with torch.inference_mode():
        maps = model.features(torch.from_numpy(spec.preprocessing(goods + changed)))
        fused_map, fused_scores = model.score_features(maps)
        patch_map, patch = model.score_patches(
            ((maps - model.feature_mean) / model.feature_scale).flatten(2).transpose(1, 2)
        )
        image = model.image_distances(model.embed(maps))
    offset, weight = model.image_fusion.tolist()
    term = weight * (image - offset)
    assert weight > 0
    patch = patch - model.background_level(patch_map) + model.background_offset
    torch.testing.assert_close(fused_scores, (patch + term).clamp_min(0))
    # the map keeps the score's units, so the one threshold applies to both
    torch.testing.assert_close(fused_map.flatten(1), (patch_map + term[:, None]).clamp_min(0))
    assert image[3:].min() > 2 * image[:3].max()  # the whole-surface change is far from good
    assert fused_scores[3:].min() - fused_scores[:3].max() > patch[3:].min() - patch[:3].max()
    loaded, loaded_spec = load_anomaly_model(save_anomaly_model(tmp_path / "m.pt", model, spec))
    assert loaded_spec.image_neighbours == 3
    np.testing.assert_allclose(
        score_images(loaded, spec.preprocessing, changed)[0],
        score_images(model, spec.preprocessing, changed)[0],
        rtol=1e-5,
    )
    old = spec.to_dict()
    del old["image_neighbours"]  # a spec written before the fusion existed: patch score only
    assert AnomalySpec.from_dict(old).image_neighbours == 0


def test_fewer_than_eight_good_images_or_k_zero_keep_the_patch_score_alone(fitted):
    _, spec, _ = fitted  # six good images: too few for a spread of image distances
    assert spec.image_neighbours == 0
    config = AnomalyConfig(image_size=64, image_neighbours=0)
    goods = [tile(seed)[0] for seed in range(8)]
    model, spec, _ = fit_detector(goods, len(goods), config)
    assert spec.image_neighbours == 0 and not hasattr(model, "image_bank")


def test_without_standardisation_the_features_are_searched_as_they_are():
    config = AnomalyConfig(image_size=64, max_bank=16, standardise=False)
    model, _, stats = fit_detector([tile(1)[0], tile(2)[0]], 2, config)
    assert torch.equal(model.feature_scale.flatten(), torch.ones(stats.feature_dim))
    assert torch.equal(model.feature_mean.flatten(), torch.zeros(stats.feature_dim))


def test_fitting_without_good_images_names_the_fix():
    with pytest.raises(DataError, match="No good images"):
        fit_detector([], 0, AnomalyConfig(image_size=64))


@pytest.mark.parametrize("size", [100, 32])
def test_an_image_size_the_backbone_cannot_take_is_refused(size):
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_anomaly_config(image_size=size)
    config = AnomalyConfig.model_construct(**{**AnomalyConfig().model_dump(), "image_size": size})
    with pytest.raises(ConfigError, match="multiple of 32"):
        fit_detector([tile(0)[0]], 1, config)


def test_a_bank_beyond_the_memory_budget_is_refused_before_any_work():
    config = AnomalyConfig(image_size=64, max_memory_gb=0.001, max_candidates=100_000)
    with pytest.raises(TrainingError, match="more than the .* GiB allowed"):
        fit_detector([tile(0)[0]] * 200, 200, config)


def test_backbones_without_staged_features_are_refused_by_the_config():
    with pytest.raises(ValueError, match="efficientnet_lite"):
        AnomalyConfig(backbone="resnet18")


def test_flip_averaging_scores_an_image_and_its_mirror_alike_and_travels_with_the_model(
    fused, tmp_path
):
    model, spec, _ = fused
    assert spec.flip_average and model.flip_average  # the default
    images = [tile(80)[0], tile(81, defect=True)[0], global_change(82)]
    batch = torch.from_numpy(spec.preprocessing(images))
    with torch.inference_mode():
        scores, maps = model(batch)
        mirror_scores, mirror_maps = model(batch.flip(3))
        model.flip_average = False
        alone, alone_maps = model(batch)
        mirrored_alone, mirrored_maps = model(batch.flip(3))
        model.flip_average = True
    # the mean of the image's and its mirror's own scores and maps (the mirror's flipped back)
    torch.testing.assert_close(scores, (alone + mirrored_alone) / 2)
    torch.testing.assert_close(maps, (alone_maps + mirrored_maps.flip(3)) / 2)
    # so an image and its mirror get one score and mirrored maps
    torch.testing.assert_close(mirror_scores, scores)
    torch.testing.assert_close(mirror_maps, maps.flip(3))
    assert not torch.allclose(alone, mirrored_alone)
    loaded, loaded_spec = load_anomaly_model(save_anomaly_model(tmp_path / "m.pt", model, spec))
    assert loaded_spec.flip_average and loaded.flip_average
    np.testing.assert_allclose(
        score_images(loaded, spec.preprocessing, images)[0], scores.numpy(), rtol=1e-5
    )
    old = spec.to_dict()
    del old["flip_average"]  # a spec written before flip averaging: each image alone
    assert not AnomalySpec.from_dict(old).flip_average


def test_a_local_defect_outranks_a_tile_that_is_unfamiliar_everywhere_with_the_background_level():
    from visionline.anomaly._model import PatchCore
    from visionline.anomaly._search import bank_neighbours

    bank = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    model = PatchCore(torch.nn.Identity(), bank, bank_neighbours(bank, 4), smoothing_sigma=0)
    local = torch.zeros(1, 2, 4, 4)
    local[0, 0] = 0.5
    local[0, 0, 1, 2] = 3.0  # one patch far off, the rest close to the good patches
    everywhere = torch.zeros(1, 2, 4, 4)
    everywhere[0, 0] = 3.5  # every patch equally far: a new tile, nothing stands out
    maps = torch.cat([local, everywhere])
    with torch.inference_mode():
        plain_map, plain = model.score_features(maps)
        model.set_background(0.25)
        relative_map, relative = model.score_features(maps)
    assert plain[1] > plain[0] and relative[0] > relative[1]
    level = model.background_level(plain_map.flatten(1))
    torch.testing.assert_close(level, torch.tensor([0.5, 3.5]), atol=0.15, rtol=0)
    torch.testing.assert_close(relative, (plain - level + 0.25).clamp_min(0))
    torch.testing.assert_close(relative_map, plain_map)  # the map keeps absolute distances


def test_the_background_level_is_fitted_on_by_default_and_travels_with_the_model(fused, tmp_path):
    model, spec, _ = fused
    assert spec.subtract_background and model.subtract_background
    assert float(model.background_offset) > 0
    images = [tile(90)[0], tile(91, defect=True)[0], global_change(92)]
    loaded, loaded_spec = load_anomaly_model(save_anomaly_model(tmp_path / "m.pt", model, spec))
    assert loaded_spec.subtract_background and loaded.subtract_background
    np.testing.assert_allclose(
        score_images(loaded, spec.preprocessing, images)[0],
        score_images(model, spec.preprocessing, images)[0],
        rtol=1e-5,
    )
    old = spec.to_dict()
    del old["subtract_background"]  # a spec written before the background level: absolute scores
    assert not AnomalySpec.from_dict(old).subtract_background
    config = AnomalyConfig(image_size=64, subtract_background=False)
    plain, plain_spec, _ = fit_detector([tile(1)[0], tile(2)[0]], 2, config)
    assert not plain_spec.subtract_background and not hasattr(plain, "background_offset")
