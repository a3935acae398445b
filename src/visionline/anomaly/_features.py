"""Locally aware patch features from two mid-level stages of a frozen, pretrained backbone.

Mid-level stages describe texture and small structures (cracks, pits) without the ImageNet class
bias of the last stages. Each stage map is averaged over a k×k neighbourhood so a patch feature
sees its surroundings, the deeper map is upsampled to the shallower one's grid, and both are
concatenated: one feature vector per patch of the input (PatchCore, Roth et al. 2022).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visionline.errors import ConfigError

MIN_IMAGE_SIZE = 64
SIZE_MULTIPLE = 32
"""The deepest stage of the supported backbones has stride 32; other sizes misalign the grid."""


def check_image_size(size: int) -> None:
    """Refuse input sizes the backbone's stride-32 grid cannot take."""
    if size < MIN_IMAGE_SIZE or size % SIZE_MULTIPLE:
        nearest = max(MIN_IMAGE_SIZE, round(size / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        raise ConfigError(
            f"Image size {size} does not fit the backbone, which needs a multiple of "
            f"{SIZE_MULTIPLE} of at least {MIN_IMAGE_SIZE}; use --image-size {nearest}."
        )


def _stages(trunk: nn.Module) -> nn.Sequential:
    blocks = getattr(trunk, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ConfigError(
            f"Backbone {type(trunk).__name__} has no staged 'blocks'; "
            "use an EfficientNet-Lite backbone for anomaly detection."
        )
    return blocks


class PatchFeatures(nn.Module):
    """Images (N, 3, S, S) → patch features (N, D, S/r, S/r), r the first stage's stride."""

    def __init__(self, trunk: nn.Module, stages: Sequence[int], neighbourhood: int = 3):
        super().__init__()
        blocks = _stages(trunk)
        stages = sorted({int(s) for s in stages})
        if len(stages) != 2 or stages[0] < 0 or stages[1] >= len(blocks):
            raise ConfigError(
                f"Anomaly features need two distinct stages between 0 and {len(blocks) - 1}, "
                f"not {list(stages)}; pass e.g. --stages 2,4."
            )
        if neighbourhood < 1 or neighbourhood % 2 == 0:
            raise ConfigError(
                f"The neighbourhood must be an odd number of patches, not {neighbourhood}; use 3."
            )
        self.stem = nn.Sequential(trunk.conv_stem, trunk.bn1)
        self.blocks = nn.Sequential(*list(blocks.children())[: stages[1] + 1])
        self.stages = tuple(stages)
        self.neighbourhood = neighbourhood
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PatchFeatures:
        """Frozen: batch norms keep their ImageNet statistics whatever the caller asks."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        maps = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.stages:
                maps.append(x)
        pad = self.neighbourhood // 2
        pooled = [
            F.avg_pool2d(m, self.neighbourhood, stride=1, padding=pad, count_include_pad=False)
            for m in maps
        ]
        shallow, deep = pooled
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([shallow, deep], dim=1)


def build_features(
    backbone: str, pretrained: str, stages: Sequence[int], neighbourhood: int = 3
) -> PatchFeatures:
    """A frozen feature extractor whose trunk gets its weights the way `visionline.train` loads them."""
    from visionline.train._backbones import create_backbone, load_pretrained

    trunk = create_backbone(backbone, num_classes=0)
    load_pretrained(trunk, backbone, pretrained)
    return PatchFeatures(trunk, stages, neighbourhood)
