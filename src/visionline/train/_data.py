"""Training data: decode each image once into a uint8 pixel cache, then augment tensors.

Decoding JPEGs every epoch starves a 2-core box, so pixels are decoded once per blob (keyed by
sha256) with the model's `Preprocessing`, kept in memory and optionally as an `.npy` file under
the project cache. Training augments those uint8 tensors with torchvision v2; evaluation feeds
them through `Preprocessing.normalize`, exactly as the edge runtime does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from visionline.errors import DataError, ImageError
from visionline.preprocessing import Preprocessing, decode_image

if TYPE_CHECKING:
    from visionline.data import BlobStore, DatasetVersion, ImageRecord


def record_class(record: ImageRecord) -> str:
    """The model class of a manifest row: its subtype, else its label."""
    return record.subtype or record.label


def split_labels(
    version: DatasetVersion, split: str, class_names: Sequence[str]
) -> tuple[list[ImageRecord], np.ndarray]:
    """Records of one split and their class indices; refuses missing splits and unknown classes."""
    records = version.split_records(split)
    if not records:
        raise DataError(
            f"Dataset version {version.short_id} has no '{split}' split; "
            f"run 'visionline data split {version.short_id}' first."
        )
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({record_class(r) for r in records} - index.keys())
    if unknown:
        raise DataError(
            f"Dataset version {version.short_id} has classes {', '.join(unknown)} that are not in "
            f"the project's classes ({', '.join(class_names)}); add them to visionline.yaml or relabel."
        )
    return records, np.asarray([index[record_class(r)] for r in records], dtype=np.int64)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = Counter(labels.tolist())
    return np.asarray([counts.get(i, 0) for i in range(num_classes)], dtype=np.int64)


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Loss weight per class, N / (K·n_c) over the classes present; absent classes weigh 1."""
    counts = class_counts(labels, num_classes)
    present = counts > 0
    weights = np.ones(num_classes, dtype=np.float32)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.from_numpy(weights)


class PixelCache:
    """Decoded, resized uint8 pixels (H, W, 3) per blob sha256, decoded at most once."""

    def __init__(self, blobs: BlobStore, preprocessing: Preprocessing, cache_dir: Path | None):
        self.blobs = blobs
        self.preprocessing = preprocessing
        self.cache_dir = cache_dir
        self._pixels: dict[str, np.ndarray] = {}
        self.decoded = 0

    def _file_for(self, shas: Sequence[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        prep = json.dumps(self.preprocessing.to_dict(), sort_keys=True)
        key = hashlib.sha256((prep + "\n" + "\n".join(shas)).encode()).hexdigest()[:32]
        return self.cache_dir / "pixels" / f"{key}.npy"

    def _decode(self, record: ImageRecord) -> np.ndarray:
        try:
            image = decode_image(self.blobs.get(record.sha256))
        except ImageError as exc:
            raise ImageError(f"{record.path}: {exc}") from exc
        return self.preprocessing.to_uint8(image)

    def stack(
        self, records: Sequence[ImageRecord], advance: Callable[[int], Any] | None = None
    ) -> np.ndarray:
        """(N, H, W, 3) uint8 pixels in record order; reads the .npy file when one matches."""
        shas = [r.sha256 for r in records]
        path = self._file_for(shas)
        if path is not None and path.is_file():
            pixels = np.load(path, mmap_mode="r")
            if pixels.shape[0] == len(shas):
                if advance:
                    advance(len(shas))
                return np.array(pixels)  # a writable in-memory copy of the memory map
        for record in records:
            if record.sha256 not in self._pixels:
                self._pixels[record.sha256] = self._decode(record)
                self.decoded += 1
            if advance:
                advance(1)
        pixels = np.stack([self._pixels[sha] for sha in shas])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, pixels)
            tmp.replace(path)
        return pixels


class QuarterTurn(torch.nn.Module):
    """Rotate a (..., H, W) tensor by a random multiple of 90 degrees: exact, no filled corners."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.rot90(image, int(torch.randint(4, (1,))), dims=(-2, -1))


def build_augment(
    strength: float, size: int, policy: str = "general"
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Per-image torchvision v2 augmentation of a uint8 (C, H, W) tensor; None when strength is 0.

    `general`: flips, a small rotation, colour jitter, a random resized crop and a blur, all scaled
    by `strength` in [0, 1]. Inspection images have no canonical up, so both flips apply. Hue
    jitter is left out: it costs more than the rest together on the CPU, and colour is a variety
    cue. `texture`: flips, quarter turns and brightness/contrast jitter, nothing that can crop or
    blur away a small defect.
    """
    if strength <= 0:
        return None
    from torchvision.transforms import v2

    if policy == "texture":
        return v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                QuarterTurn(),
                v2.ColorJitter(brightness=0.4 * strength, contrast=0.4 * strength),
            ]
        )
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(1.0 - 0.5 * strength, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(30.0 * strength),
            v2.ColorJitter(0.4 * strength, 0.4 * strength, 0.3 * strength),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 0.1 + 1.5 * strength))], p=0.3),
        ]
    )


class AugmentedPixels(torch.utils.data.Dataset):
    """Cached uint8 pixels as (C, H, W) tensors, augmented on the fly, with their class index."""

    def __init__(
        self,
        pixels_nhwc: np.ndarray,
        labels: np.ndarray,
        augment: Callable[[torch.Tensor], torch.Tensor] | None,
    ):
        self.pixels = torch.from_numpy(np.ascontiguousarray(pixels_nhwc)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(labels)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.pixels[i]
        if self.augment is not None:
            with single_threaded():
                image = self.augment(image)
        return image, self.labels[i]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run small per-image tensor ops on one thread.

    Intra-op parallelism on a 128×128 image costs more in thread hand-offs than it saves: on
    2 cores the augmentation ran about 10× faster with one thread than with two.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def normalize_batch(batch_uint8: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """NCHW uint8 → normalised float32 on the batch's device, the same arithmetic as
    `Preprocessing.normalize` (which the edge runtime and evaluation use)."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=batch_uint8.device)
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=batch_uint8.device)
    if preprocessing.channel_order == "BGR":
        mean, std = mean.flip(0), std.flip(0)
    batch = batch_uint8.to(torch.float32) / 255.0
    return (batch - mean[:, None, None]) / std[:, None, None]


def eval_batches(pixels_nhwc: np.ndarray, preprocessing: Preprocessing, batch_size: int) -> Any:
    """Yield (start, NCHW float32 tensor) through `Preprocessing.normalize`: edge-runtime parity."""
    for start in range(0, len(pixels_nhwc), batch_size):
        chunk = np.asarray(pixels_nhwc[start : start + batch_size])
        yield start, torch.from_numpy(preprocessing.normalize(chunk))
