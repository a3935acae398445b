"""What the classifier head sees: the backbone's globally pooled embedding, or its feature map.

A small defect (a bruise of a few pixels on a 128 px apple) covers one or two cells of the last
feature map; global average pooling dilutes it by the other ~48 cells, and a linear head on that
average cannot tell it from a good apple's texture (benchmarks/demo_recipe.py: 56% val recall at
2% false rejects on apples of seed 7). `patches` keeps the map of the stages before the last one
and scores every cell with a small 1x1-convolution MLP, then pools the cell scores with a
log-sum-exp (a smooth maximum), so one defective cell can carry the image: a multiple-instance
head. It is trained on cached maps like the linear head on cached vectors.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import nn

from visionline.errors import TrainingError

__all__ = ["PATCH_HIDDEN", "Features", "PatchHead", "patch_channels", "patch_map"]

PATCH_HIDDEN = 64
"""Hidden width of the per-cell MLP (the probe on seed 7 used 64; wider only overfits 750 images)."""


class Features(str, Enum):
    """What the head classifies.

    `pooled`: a linear head on the globally average-pooled last stage (ImageNet style).
    `patches`: a per-cell MLP on the feature map before the last stage, pooled by log-sum-exp.
    """

    POOLED = "pooled"
    PATCHES = "patches"


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

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        scores = self.cells((maps - self.mean) / self.std).flatten(2)
        return torch.logsumexp(scores, dim=2) - math.log(scores.shape[2])
