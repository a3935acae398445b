"""Fitting a detector on good images: stream patch features, keep a bounded random pool, pick the
memory bank by greedy k-centre selection, and precompute the bank's own neighbours."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from visionline.anomaly._config import AnomalyConfig
from visionline.anomaly._coreset import greedy_coreset
from visionline.anomaly._features import build_features, check_image_size
from visionline.anomaly._model import AnomalySpec, ImageKnn, PatchCore
from visionline.anomaly._search import DEFAULT_CHUNK, bank_neighbours, squared_distances
from visionline.errors import DataError, TrainingError
from visionline.preprocessing import Preprocessing

if TYPE_CHECKING:
    from PIL import Image

FLOAT_BYTES = 4
MIN_SCALE = 1e-3
"""Floor of a channel's standard deviation, so a channel constant on good patches cannot blow up."""
GIB = 1024**3
IMAGE_KNN_MIN_IMAGES = 8
"""Fewer good images give no usable spread of image-level distances to weigh the fusion with."""


@dataclass
class FitStats:
    """What a fit measured: the numbers reported beside the model."""

    n_images: int
    total_patches: int
    candidates: int
    bank_size: int
    feature_dim: int
    feature_seconds: float
    coreset_seconds: float

    @property
    def fit_seconds(self) -> float:
        return self.feature_seconds + self.coreset_seconds


def preprocessing_for(config: AnomalyConfig) -> Preprocessing:
    """The input pipeline a detector is fitted with; it travels with the model."""
    from visionline.train._backbones import normalization_for

    mean, std = normalization_for(config.backbone, config.pretrained)
    return Preprocessing(
        size=config.image_size,
        resize_mode=config.resize_mode,
        mean=mean,
        std=std,
        autocontrast=config.autocontrast,
    )


def memory_budget_bytes(config: AnomalyConfig) -> int:
    """Bytes the fit may hold: the configured limit, else half of the memory available now."""
    if config.max_memory_gb is not None:
        return int(config.max_memory_gb * GIB)
    import psutil

    return int(psutil.virtual_memory().available * 0.5)


def _check_memory(config: AnomalyConfig, candidates: int, bank: int, dim: int) -> None:
    needed = FLOAT_BYTES * (
        candidates * (dim + min(dim, config.projection_dim or dim) + 2)
        + bank * (dim + config.reweight_neighbours)
        + DEFAULT_CHUNK * bank * 2
    )
    budget = memory_budget_bytes(config)
    if needed > budget:
        raise TrainingError(
            f"The memory bank would need {needed / GIB:.1f} GiB ({candidates:,} candidate patches, "
            f"bank of {bank:,}), more than the {budget / GIB:.1f} GiB allowed; lower max_candidates, "
            "max_bank or image_size."
        )


def batches(images: Iterable[Image.Image], size: int) -> Iterator[list[Image.Image]]:
    batch: list[Image.Image] = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fit_detector(
    images: Iterable[Image.Image],
    n_images: int,
    config: AnomalyConfig,
    advance: Callable[[int], None] | None = None,
) -> tuple[PatchCore, AnomalySpec, FitStats]:
    """Fit on `n_images` good images (an iterable, so they need not all be in memory)."""
    if n_images <= 0:
        raise DataError("No good images to fit on; add good images to the train split.")
    check_image_size(config.image_size)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    preprocessing = preprocessing_for(config)
    features = build_features(
        config.backbone, config.pretrained, config.stages, config.neighbourhood
    )
    with torch.inference_mode():
        probe = features(torch.zeros(1, 3, config.image_size, config.image_size))
    dim, per_image = probe.shape[1], probe.shape[2] * probe.shape[3]
    total = n_images * per_image
    keep = min(per_image, max(1, math.ceil(config.max_candidates / n_images)))
    bank_size = min(
        config.max_bank,
        max(config.min_bank, math.ceil(config.coreset_ratio * total)),
        keep * n_images,
    )
    _check_memory(config, keep * n_images, bank_size, dim)

    started = time.perf_counter()
    pool: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []
    seen = 0
    with torch.inference_mode():
        for batch in batches(images, config.batch_size):
            maps = features(torch.from_numpy(preprocessing(batch)))
            patches = maps.permute(0, 2, 3, 1).reshape(len(batch), per_image, dim)
            pooled.append(maps.mean(dim=(2, 3)))
            for row in patches:
                chosen = torch.randperm(per_image, generator=generator)[:keep]
                pool.append(row[chosen].clone())
            seen += len(batch)
            if advance is not None:
                advance(len(batch))
    if seen != n_images:
        raise DataError(f"Expected {n_images} good images but read {seen}; check the dataset.")
    candidates = torch.cat(pool)
    del pool
    feature_mean = feature_scale = None
    if config.standardise:  # in place: the candidate pool is the largest thing a fit holds
        feature_mean = candidates.mean(dim=0)
        feature_scale = candidates.std(dim=0).clamp_min(MIN_SCALE)
        candidates.sub_(feature_mean).div_(feature_scale)
    feature_seconds = time.perf_counter() - started

    started = time.perf_counter()
    chosen = greedy_coreset(candidates, bank_size, config.projection_dim, config.seed)
    bank = candidates[chosen].contiguous()
    neighbours = bank_neighbours(bank, config.reweight_neighbours)
    model = PatchCore(
        features,
        bank,
        neighbours,
        config.smoothing_sigma,
        feature_mean,
        feature_scale,
        score_neighbours=config.score_neighbours,
        flip_average=config.flip_average,
    ).eval()
    patch_scores, levels = training_scores(model, candidates.view(n_images, keep, dim))
    if config.subtract_background:
        offset = float(levels.mean())
        model.set_background(offset)
        patch_scores = patch_scores - levels + offset
    image_neighbours = 0
    if n_images >= IMAGE_KNN_MIN_IMAGES:  # leave-one-out: k of the other images
        image_neighbours = min(config.image_neighbours, n_images - 2)
    if image_neighbours:
        model.set_image_knn(_image_knn(patch_scores, torch.cat(pooled), image_neighbours, config))
    coreset_seconds = time.perf_counter() - started

    spec = AnomalySpec(
        backbone=config.backbone,
        stages=list(config.stages),
        preprocessing=preprocessing,
        pretrained=config.pretrained,
        neighbourhood=config.neighbourhood,
        reweight_neighbours=config.reweight_neighbours,
        smoothing_sigma=config.smoothing_sigma,
        score_neighbours=config.score_neighbours,
        image_neighbours=image_neighbours,
        flip_average=config.flip_average,
        subtract_background=config.subtract_background,
    )
    stats = FitStats(
        n_images,
        total,
        int(candidates.shape[0]),
        int(bank.shape[0]),
        dim,
        feature_seconds,
        coreset_seconds,
    )
    return model, spec, stats


def training_scores(model: PatchCore, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) patch scores and (N,) median patch distances of the training images against the bank,
    from their standardised patches (N, P, D) kept for the coreset (all of them unless
    `max_candidates` cut them)."""
    with torch.inference_mode():
        parts = [model.score_patches(part) for part in patches.split(64)]
    distances = torch.cat([d for d, _ in parts])
    return torch.cat([s for _, s in parts]), model.background_level(distances)


def _image_knn(
    patch: torch.Tensor, embeddings: torch.Tensor, k: int, config: AnomalyConfig
) -> ImageKnn:
    """The image-level kNN and its fusion weights from the training images alone: each image's
    distance to its k nearest *other* training images, and its patch score (`patch`, (N,))."""
    mean = embeddings.mean(dim=0)
    scale = embeddings.std(dim=0).clamp_min(MIN_SCALE)
    z = (embeddings - mean) / scale
    z_sq = (z * z).sum(dim=1)
    own = [
        squared_distances(part, z, z_sq).topk(k + 1, dim=1, largest=False).values[:, 1:]
        for part in z.split(DEFAULT_CHUNK)
    ]  # the nearest is the image itself, at distance 0
    image = torch.cat(own).sqrt().mean(dim=1)
    bank = z
    if len(z) > config.max_bank:  # the bound on the bank holds for this one too
        generator = torch.Generator().manual_seed(config.seed)
        bank = z[torch.randperm(len(z), generator=generator)[: config.max_bank]]
    weight = float(patch.std()) / max(float(image.std()), 1e-6)
    return ImageKnn(bank, mean, scale, float(image.mean()), weight, k)


def score_images(
    model: PatchCore,
    preprocessing: Preprocessing,
    images: Iterable[Image.Image],
    batch_size: int = 16,
    advance: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and anomaly maps (N, S, S) at model-input resolution, float32."""
    scores, maps = [], []
    with torch.inference_mode():
        for batch in batches(images, batch_size):
            score, amap = model(torch.from_numpy(preprocessing(batch)))
            scores.append(score.numpy())
            maps.append(amap[:, 0].numpy())
            if advance is not None:
                advance(len(batch))
    if not scores:
        size = preprocessing.size
        return np.zeros(0, np.float32), np.zeros((0, size, size), np.float32)
    return np.concatenate(scores), np.concatenate(maps)
