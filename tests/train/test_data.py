"""The training data pipeline: decode once, cache, augment, and edge-runtime parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from visionline.data import DatasetRepo
from visionline.errors import DataError, ImageError
from visionline.preprocessing import Preprocessing, decode_image
from visionline.train._data import (
    AugmentedPixels,
    PixelCache,
    build_augment,
    eval_batches,
    inverse_frequency_weights,
    normalize_batch,
    split_labels,
)


def test_split_labels_maps_subtypes_to_model_classes(tiny_project) -> None:
    project, version = tiny_project
    records, labels = split_labels(version, "train", project.config.model_classes())
    assert len(records) == 18
    assert np.bincount(labels).tolist() == [8, 5, 5]
    assert {r.subtype for r, y in zip(records, labels) if y == 2} == {"dent"}


def test_missing_split_names_the_split_command(tiny_project) -> None:
    project, version = tiny_project
    repo = DatasetRepo(project)
    unsplit = repo.create_version(
        [dataclasses.replace(r, split=None) for r in version.records], "unsplit", None, {}
    )
    with pytest.raises(DataError, match=f"run 'visionline data split {unsplit.short_id}'"):
        split_labels(unsplit, "train", project.config.model_classes())


def test_classes_outside_the_project_are_refused(tiny_project) -> None:
    _, version = tiny_project
    with pytest.raises(DataError, match="classes dent, scratch that are not in the project"):
        split_labels(version, "train", ["good", "bruise"])


def test_pixels_are_decoded_once_and_cached_on_disk(tiny_project, tmp_path) -> None:
    project, version = tiny_project
    blobs = DatasetRepo(project).blobs
    preprocessing = Preprocessing(size=24)
    records = version.split_records("train")
    cache = PixelCache(blobs, preprocessing, tmp_path / "cache")
    pixels = cache.stack(records + records[:3])
    assert pixels.shape == (21, 24, 24, 3) and pixels.dtype == np.uint8
    assert cache.decoded == 18
    assert (pixels[:3] == pixels[18:]).all()
    assert len(list((tmp_path / "cache" / "pixels").glob("*.npy"))) == 1

    warm = PixelCache(blobs, preprocessing, tmp_path / "cache")
    assert np.array_equal(warm.stack(records + records[:3]), pixels)
    assert warm.decoded == 0
    other_size = PixelCache(blobs, Preprocessing(size=16), tmp_path / "cache")
    assert other_size.stack(records).shape == (18, 16, 16, 3) and other_size.decoded == 18


def test_evaluation_input_equals_the_edge_runtime_preprocessing(tiny_project) -> None:
    project, version = tiny_project
    blobs = DatasetRepo(project).blobs
    preprocessing = Preprocessing(size=28, resize_mode="letterbox", mean=(0.5, 0.4, 0.3))
    records = version.split_records("val")
    pixels = PixelCache(blobs, preprocessing, None).stack(records)
    edge = preprocessing([decode_image(blobs.get(r.sha256)) for r in records])
    ours = torch.cat([batch for _, batch in eval_batches(pixels, preprocessing, 4)]).numpy()
    assert np.array_equal(ours, edge)
    trained = normalize_batch(torch.from_numpy(pixels).permute(0, 3, 1, 2), preprocessing).numpy()
    np.testing.assert_allclose(trained, edge, rtol=0, atol=1e-6)


def test_bgr_models_normalise_like_the_edge_runtime() -> None:
    preprocessing = Preprocessing(size=16, channel_order="BGR", mean=(0.1, 0.5, 0.9))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    torch_side = normalize_batch(torch.from_numpy(pixels).permute(0, 3, 1, 2), preprocessing)
    np.testing.assert_allclose(torch_side.numpy(), preprocessing.normalize(pixels), atol=1e-6)


def test_a_corrupt_blob_names_the_image(tiny_project, tmp_path) -> None:
    project, version = tiny_project
    repo = DatasetRepo(project)
    record = version.records[0]
    broken = dataclasses.replace(record, sha256=repo.blobs.put(b"\x89PNG truncated"))
    with pytest.raises(ImageError, match=record.path):
        PixelCache(repo.blobs, Preprocessing(size=16), None).stack([broken])


def test_augmentation_keeps_shape_and_dtype_and_varies() -> None:
    torch.manual_seed(0)
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    dataset = AugmentedPixels(pixels, np.arange(4), build_augment(1.0, 32))
    first, label = dataset[2]
    second, _ = dataset[2]
    assert first.shape == (3, 32, 32) and first.dtype == torch.uint8 and int(label) == 2
    assert not torch.equal(first, second)
    plain = AugmentedPixels(pixels, np.arange(4), build_augment(0.0, 32))
    assert torch.equal(plain[2][0], torch.from_numpy(pixels[2]).permute(2, 0, 1))


def test_texture_augmentation_only_flips_turns_and_relights() -> None:
    """No crop, blur or free rotation: with almost no jitter every output is one of the 8
    symmetries of the square."""
    torch.manual_seed(0)
    image = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 16, 16), dtype=np.uint8))
    symmetries = [torch.rot90(image, k, (1, 2)) for k in range(4)]
    symmetries += [s.flip(2) for s in symmetries]
    augment = build_augment(1e-6, 16, "texture")
    outputs = [augment(image) for _ in range(40)]
    matched = {  # factors of 1 +- 4e-7 still round a level or two down
        next(i for i, s in enumerate(symmetries) if (o.int() - s.int()).abs().max() <= 2)
        for o in outputs
    }
    assert len(matched) >= 6
    relit = build_augment(1.0, 16, "texture")(image)
    assert relit.shape == image.shape and relit.dtype == torch.uint8
    assert sorted(relit.flatten().tolist()) != sorted(image.flatten().tolist())


def test_rare_classes_weigh_more() -> None:
    weights = inverse_frequency_weights(np.array([0] * 8 + [1] * 2), 3)
    assert weights[1] > weights[0]
    assert weights.tolist() == pytest.approx([10 / 16, 10 / 4, 1.0])
