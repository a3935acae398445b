"""What the classifier head sees: the backbone's globally pooled embedding, or its feature map.

A small defect (a bruise of a few pixels on a 128 px apple) covers one or two cells of the last
feature map; global average pooling dilutes it by the other ~48 cells, and a linear head on that
average cannot tell it from a good apple's texture (benchmarks/demo_recipe.py: 56% val recall at
2% false rejects on apples of seed 7). `patches` keeps the map of the stages before the last one
and scores every cell with a small 1x1-convolution MLP, then pools the cell scores with a
log-sum-exp (a smooth maximum), so one defective cell can carry the image: a multiple-instance
head. It is trained on cached maps like the linear head on cached vectors.

Where the records carry defect masks, the cells can also be told where the defect is
(`mask_weight`): each cell's defect-vs-good logit is fitted to the share of the cell its mask
covers (`MaskTarget`), and every cell of a good image is negative, beside the image loss.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import torch
from torch import nn

from visionline.errors import TrainingError

__all__ = [
    "PATCH_HIDDEN",
    "Features",
    "MaskTarget",
    "PatchHead",
    "cell_mask_loss",
    "cell_targets",
    "patch_channels",
    "patch_map",
]

PATCH_HIDDEN = 64
"""Hidden width of the per-cell MLP (the probe on seed 7 used 64; wider only overfits 750 images)."""


class Features(str, Enum):
    """What the head classifies.

    `pooled`: a linear head on the globally average-pooled last stage (ImageNet style).
    `patches`: a per-cell MLP on the feature map before the last stage, pooled by log-sum-exp.
    """

    POOLED = "pooled"
    PATCHES = "patches"


class MaskTarget(str, Enum):
    """What a cell's defect-vs-good logit is fitted to where the image has a defect mask.

    `share`: the share of the cell the mask covers (a cell half over a bruise is half defective).
    `any`: 1 for every cell the mask touches at all, so a defect of a few pixels still makes
    its cell positive (its share of a 32 px cell is a few percent).
    """

    SHARE = "share"
    ANY = "any"


def cell_targets(masks: np.ndarray, grid: tuple[int, int], target: MaskTarget) -> np.ndarray:
    """(N, h, w) float32 cell targets of (N, S, S) masks in the model frame (bool or coverage in
    [0, 1]) for a feature map of `grid` cells; NaN masks (an image without one) stay NaN."""
    pooled = nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None], grid
    )[:, 0].numpy()
    if MaskTarget(target) is MaskTarget.ANY:
        pooled = np.where(np.isnan(pooled), np.nan, (pooled > 0).astype(np.float32))
    return pooled.astype(np.float32)


def cell_mask_loss(cells: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each cell's defect-vs-good logit (log-sum-exp of the defect
    classes' cell logits minus the good one; class 0 is `good`) against its (N, H, W) target,
    averaged over the rows whose target is known (not NaN); 0 when none is."""
    known = ~torch.isnan(targets).flatten(1).any(dim=1)
    if not known.any():
        return cells.sum() * 0.0
    cells, targets = cells[known], targets[known]
    defect = torch.logsumexp(cells[:, 1:], dim=1) - cells[:, 0]
    return nn.functional.binary_cross_entropy_with_logits(defect, targets)


def patch_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features of `images` after every stage of `backbone` but the last: the
    deepest map whose cells still see a small defect without the widest stage's blur.
    EfficientNet/MobileNet (`conv_stem`, `bn1`, `blocks`) and ResNet (`layer1..3`) are supported."""
    if isinstance(getattr(backbone, "blocks", None), nn.Sequential) and hasattr(backbone, "conv_stem"):
        x = backbone.bn1(backbone.conv_stem(images))
        for stage in backbone.blocks[:-1]:
            x = stage(x)
        return x
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        x = backbone.maxpool(backbone.act1(backbone.bn1(backbone.conv1(images))))
        return backbone.layer3(backbone.layer2(backbone.layer1(x)))
    raise TrainingError(
        f"features: patches supports EfficientNet, MobileNet and ResNet backbones, not "
        f"{type(backbone).__name__}; use features: pooled."
    )


def patch_channels(backbone: nn.Module) -> int:
    """Channels of `patch_map` for `backbone`, from one tiny forward pass."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        channels = patch_map(backbone, torch.zeros(1, 3, 64, 64)).shape[1]
    backbone.train(was_training)
    return int(channels)


class PatchHead(nn.Module):
    """Class logits (N, K) of a feature map (N, C, H, W): each channel is standardised with the
    training maps' statistics (`standardise`, stored as buffers so they travel with the model),
    a 1x1-conv MLP scores every cell, and the log-sum-exp over cells minus log(cells) pools them,
    a smooth maximum that equals the mean when all cells agree and follows the strongest cell
    when one stands out."""

    def __init__(self, in_features: int, out_features: int, dropout: float,
                 hidden: int = PATCH_HIDDEN):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.cells = nn.Sequential(
            nn.Conv2d(in_features, hidden, 1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, out_features, 1),
        )
        self.register_buffer("mean", torch.zeros(1, in_features, 1, 1))
        self.register_buffer("std", torch.ones(1, in_features, 1, 1))

    @torch.no_grad()
    def standardise(self, maps: torch.Tensor) -> None:
        """Set the per-channel mean and std from training maps (N, C, H, W): the unnormalised
        stage outputs differ by orders of magnitude between channels."""
        self.mean.copy_(maps.mean(dim=(0, 2, 3), keepdim=True))
        self.std.copy_(maps.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-5))

    def cell_logits(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) class logits of every cell."""
        return self.cells((maps - self.mean) / self.std)

    @staticmethod
    def pool(cells: torch.Tensor) -> torch.Tensor:
        """(N, K) image logits of (N, K, H, W) cell logits: log-sum-exp minus log(cells)."""
        scores = cells.flatten(2)
        return torch.logsumexp(scores, dim=2) - math.log(scores.shape[2])

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cell_logits(maps))
