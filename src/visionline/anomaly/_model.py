"""The fitted detector: frozen patch features, a memory bank of good patches, and what travels
with it (`AnomalySpec`: backbone, stages, preprocessing, threshold)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionline.anomaly._features import PatchFeatures, build_features
from visionline.anomaly._search import nearest
from visionline.errors import NotFoundError, TrainingError
from visionline.preprocessing import Preprocessing

ANOMALY_FORMAT = "visionline.anomaly/1"
MODEL_KIND = "anomaly"


@dataclass
class AnomalySpec:
    """What a fitted anomaly detector is; the image score is a distance, higher = more anomalous."""

    backbone: str
    stages: list[int]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    pretrained: str = "imagenet"
    neighbourhood: int = 3
    reweight_neighbours: int = 9
    smoothing_sigma: float = 4.0
    score_neighbours: int = 1
    """A patch's score is its mean distance to this many nearest bank patches."""
    image_neighbours: int = 0
    """k of the image-level kNN on pooled embeddings fused into the score; 0 = patch score only."""
    flip_average: bool = False
    """Average the scores and maps of each image and its left-right mirror (test-time)."""
    subtract_background: bool = False
    """Subtract each image's median patch distance (less the training images' mean) from its score."""
    threshold: float = math.inf
    """Image scores strictly above it are flagged; set on validation good images."""
    kind: str = MODEL_KIND

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "backbone": self.backbone,
            "stages": list(self.stages),
            "preprocessing": self.preprocessing.to_dict(),
            "pretrained": self.pretrained,
            "neighbourhood": self.neighbourhood,
            "reweight_neighbours": self.reweight_neighbours,
            "smoothing_sigma": self.smoothing_sigma,
            "score_neighbours": self.score_neighbours,
            "image_neighbours": self.image_neighbours,
            "flip_average": self.flip_average,
            "subtract_background": self.subtract_background,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnomalySpec:
        values = dict(data)
        values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        return cls(**values)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius 4σ (σ in pixels of the model input)."""
    radius = max(1, round(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


@dataclass
class ImageKnn:
    """The second, image-level score: kNN distance of an image's pooled patch features to the
    training images' (each channel z-scored on them), fused with the patch score as
    ``patch + weight * (image - offset)``, a term added to every patch of the map alike (so the
    map keeps the score's units and threshold). `offset` and `weight` come from the training images
    (leave-one-out image distances, their own patch scores), so the sum weighs both z-scores
    equally yet stays in patch-distance units, positive like the patch score. It sees global,
    low-frequency defects ("uneven" surfaces) that no single patch differs by."""

    bank: torch.Tensor
    """(M, D) standardised pooled embeddings of the training images."""
    mean: torch.Tensor
    scale: torch.Tensor
    offset: float
    weight: float
    neighbours: int


class PatchCore(nn.Module):
    """Images (N, 3, S, S) → (image scores (N,), anomaly maps (N, 1, S, S)). Takes batches.

    Patch features are standardised per channel (`feature_mean`, `feature_scale`, from the fit's
    patches; identity when the fit did not standardise) before the search, and the bank holds
    standardised patches: otherwise the few channels with the largest values decide every distance.
    With an `ImageKnn`, the image score also counts how far the whole image is from good images.
    With `flip_average`, each image is scored together with its left-right mirror and the two
    scores and maps (the mirror's flipped back) are averaged: a new physical tile's patches then
    meet the bank from two sides, which steadies both the score and the map.
    With a background level (`set_background`), the image score is taken relative to the image's
    own median patch distance: a new physical tile sits farther from the bank everywhere, while a
    defect stands out from the rest of its tile. The map keeps the absolute patch distances.
    """

    def __init__(
        self,
        features: PatchFeatures,
        bank: torch.Tensor,
        bank_neighbours: torch.Tensor,
        smoothing_sigma: float = 4.0,
        feature_mean: torch.Tensor | None = None,
        feature_scale: torch.Tensor | None = None,
        score_neighbours: int = 1,
        image_knn: ImageKnn | None = None,
        flip_average: bool = False,
    ):
        super().__init__()
        self.score_neighbours = score_neighbours
        self.flip_average = flip_average
        self.features = features
        dim = bank.shape[1]
        mean = torch.zeros(dim) if feature_mean is None else feature_mean.float()
        scale = torch.ones(dim) if feature_scale is None else feature_scale.float()
        self.register_buffer("feature_mean", mean.reshape(1, dim, 1, 1).contiguous())
        self.register_buffer("feature_scale", scale.reshape(1, dim, 1, 1).contiguous())
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("bank_sq", (self.bank * self.bank).sum(dim=1))
        self.register_buffer("bank_neighbours", bank_neighbours.long())
        self.smoothing_sigma = smoothing_sigma
        kernel = gaussian_kernel(smoothing_sigma) if smoothing_sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)
        self.image_neighbours = 0
        if image_knn is not None:
            self.set_image_knn(image_knn)
        self.subtract_background = False

    def set_background(self, offset: float) -> None:
        """Score images relative to their median patch distance from now on; `offset` (the
        training images' mean median) keeps the score in patch-distance units."""
        self.subtract_background = True
        self.register_buffer("background_offset", torch.tensor(float(offset)))

    def background_level(self, distances: torch.Tensor) -> torch.Tensor:
        """(N,) each image's median patch distance (the lower one for an even count), from its
        patch distances (N, P), by a top-k that exports to ONNX."""
        half = (distances.shape[1] - 1) // 2 + 1
        return distances.topk(half, dim=1, largest=False).values[:, -1]

    def set_image_knn(self, knn: ImageKnn) -> None:
        """Fuse the image-level kNN score into the image score from now on."""
        dim = knn.bank.shape[1]
        self.image_neighbours = knn.neighbours
        self.register_buffer("image_bank", knn.bank.float().contiguous())
        self.register_buffer("image_bank_sq", (self.image_bank * self.image_bank).sum(dim=1))
        self.register_buffer("image_mean", knn.mean.float().reshape(1, dim).contiguous())
        self.register_buffer("image_scale", knn.scale.float().reshape(1, dim).contiguous())
        self.register_buffer("image_fusion", torch.tensor([knn.offset, knn.weight]).float())

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, D) pooled patch features of raw maps (N, D, h, w): the image-level embedding."""
        return maps.mean(dim=(2, 3))

    def image_distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N,) mean distance of each pooled embedding to its k nearest training images."""
        z = (embeddings - self.image_mean) / self.image_scale
        return nearest(z, self.image_bank, self.image_bank_sq, self.image_neighbours)[0]

    @property
    def bank_size(self) -> int:
        return int(self.bank.shape[0])

    def patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, h, w) distance of every patch to its nearest good patch, and the image scores."""
        return self.score_features(self.features(images))

    def score_features(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`patch_scores` from patch features (N, D, h, w) already extracted."""
        n, d, h, w = maps.shape
        patch_map, scores = self.score_patches(
            ((maps - self.feature_mean) / self.feature_scale)
            .permute(0, 2, 3, 1)
            .reshape(n, h * w, d)
        )
        if self.subtract_background:
            scores = scores - self.background_level(patch_map) + self.background_offset
        patch_map = patch_map.reshape(n, h, w)
        if self.image_neighbours:  # the map shares the score's units: the threshold applies to both
            offset, weight = self.image_fusion[0], self.image_fusion[1]
            term = weight * (self.image_distances(self.embed(maps)) - offset)
            scores = scores + term
            patch_map = (patch_map + term.view(n, 1, 1)).clamp_min(0.0)
        if self.subtract_background or self.image_neighbours:
            scores = scores.clamp_min(0.0)
        return patch_map, scores

    def score_patches(self, standardised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, P) patch distances and (N,) reweighted patch scores of standardised patches (N, P, D)."""
        n, hw, d = standardised.shape
        patches = standardised.reshape(n * hw, d)
        distances, indices = nearest(patches, self.bank, self.bank_sq, self.score_neighbours)
        distances = distances.reshape(n, hw)
        indices = indices.reshape(n, hw)
        worst, where = distances.max(dim=1, keepdim=True)
        worst_patch = standardised.gather(1, where.unsqueeze(2).expand(-1, 1, d))
        support = self.bank[self.bank_neighbours[indices.gather(1, where).squeeze(1)]]
        spread = (worst_patch - support).pow(2).sum(dim=2).sqrt()
        weight = 1.0 - torch.softmax(spread, dim=1)[:, 0]
        return distances, weight * worst.squeeze(1)

    def smooth(self, patch_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Patch distances (N, h, w) → a smoothed anomaly map (N, 1, H, W) at input resolution."""
        up = F.interpolate(patch_map.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        if self.kernel.numel() == 1:
            return up
        radius = self.kernel.numel() // 2
        horizontal = self.kernel.view(1, 1, 1, -1)
        vertical = self.kernel.view(1, 1, -1, 1)
        up = F.conv2d(F.pad(up, (radius, radius, 0, 0), mode="replicate"), horizontal)
        return F.conv2d(F.pad(up, (0, 0, radius, radius), mode="replicate"), vertical)

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """The batch the backbone sees: the images, then (with `flip_average`) their mirrors."""
        return torch.cat([images, images.flip(3)]) if self.flip_average else images

    def score_views(
        self, maps: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores (N,), smoothed maps (N, 1, H, W)) from the features of `views`."""
        patch_map, scores = self.score_features(maps)
        if self.flip_average:  # smoothing is linear and symmetric: average first, smooth once
            n = maps.shape[0] // 2
            patch_map = (patch_map[:n] + patch_map[n:].flip(2)) / 2
            scores = (scores[:n] + scores[n:]) / 2
        return scores, self.smooth(patch_map, size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.features(self.views(images))
        return self.score_views(maps, (images.shape[-2], images.shape[-1]))


def build_patchcore(spec: AnomalySpec, bank: torch.Tensor, neighbours: torch.Tensor) -> PatchCore:
    """A detector for `spec` around a given bank, with the backbone's pretrained weights."""
    features = build_features(spec.backbone, spec.pretrained, spec.stages, spec.neighbourhood)
    return PatchCore(
        features,
        bank,
        neighbours,
        spec.smoothing_sigma,
        score_neighbours=spec.score_neighbours,
        flip_average=spec.flip_average,
    )


def save_anomaly_model(path: Path, model: PatchCore, spec: AnomalySpec, **extra: Any) -> Path:
    """Weights, bank and spec as one file, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = {"format": ANOMALY_FORMAT, "spec": spec.to_dict(), "state_dict": model.state_dict()}
    payload.update(extra)
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def is_anomaly_checkpoint(path: Path | str) -> bool:
    """Whether `path` holds a detector written by `save_anomaly_model`."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (any unreadable file is simply not one)
        return False
    return isinstance(payload, dict) and payload.get("format") == ANOMALY_FORMAT


def load_anomaly_model(path: Path | str) -> tuple[PatchCore, AnomalySpec]:
    """Load a detector file, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(
            f"No anomaly model at {path}; pass a file written by 'visionline anomaly fit'."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path} is not a readable model file ({exc}); refit it.") from exc
    if not isinstance(payload, dict) or payload.get("format") != ANOMALY_FORMAT:
        raise TrainingError(
            f"{path} is not a visionline anomaly model; fit one with 'visionline anomaly fit'."
        )
    spec = AnomalySpec.from_dict(payload["spec"])
    state = payload["state_dict"]
    features = build_features(spec.backbone, "none", spec.stages, spec.neighbourhood)
    model = PatchCore(
        features,
        state["bank"],
        state["bank_neighbours"],
        spec.smoothing_sigma,
        score_neighbours=spec.score_neighbours,
        flip_average=spec.flip_average,
    )
    if spec.image_neighbours:
        model.set_image_knn(
            ImageKnn(
                state["image_bank"],
                state["image_mean"],
                state["image_scale"],
                *state["image_fusion"].tolist(),
                spec.image_neighbours,
            )
        )
    if spec.subtract_background:
        model.set_background(float(state["background_offset"]))
    model.load_state_dict({**model.state_dict(), **state})  # models fitted before standardising
    return model.eval(), spec
