"""The images every entry sees: one dataset version, decoded once, split into train (fit),
the threshold split (`calib` when the version has one, else `val`) and test (measured once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from visionline.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

    from visionline.config import Project
    from visionline.data import DatasetRepo, DatasetVersion, ImageRecord

CALIBRATION_SPLIT = "calib"
FALLBACK_SPLIT = "val"


@dataclass
class SplitData:
    """One split's records, decoded images and class indices (good = 0)."""

    name: str
    records: list[ImageRecord]
    images: list[Image.Image]
    labels: np.ndarray

    @property
    def is_defect(self) -> np.ndarray:
        return self.labels != 0


@dataclass
class LeaderboardData:
    """Everything the entries share; `threshold_split` says which split set the thresholds."""

    version: DatasetVersion
    repo: DatasetRepo
    class_names: list[str]
    train: SplitData
    calib: SplitData
    test: SplitData
    warnings: list[str] = field(default_factory=list)

    @property
    def threshold_split(self) -> str:
        return self.calib.name


def _indices(records: list[ImageRecord], class_names: list[str], split: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({r.model_class for r in records} - index.keys())
    if unknown:
        raise DataError(
            f"The {split} split has images of {', '.join(unknown)}, which are not among the "
            f"project's classes ({', '.join(class_names)}); add them to visionline.yaml or relabel."
        )
    return np.asarray([index[r.model_class] for r in records], dtype=np.int64)


def _load(
    repo: DatasetRepo, version: DatasetVersion, split: str, class_names: list[str]
) -> SplitData:
    from visionline.evaluate import split_records
    from visionline.preprocessing import decode_image

    records = split_records(version, split)
    labels = _indices(records, class_names, split)
    for kind, present in (("good", (labels == 0).any()), ("defect", (labels != 0).any())):
        if not present:
            raise DataError(
                f"The {split} split of {version.short_id} has no {kind} images, so the leaderboard "
                f"cannot fit or measure on it; re-split with 'visionline data split {version.short_id}'."
            )
    images = [decode_image(repo.blobs.get(r.sha256)) for r in records]
    return SplitData(split, records, images, labels)


def load_data(project: Project, dataset: str) -> LeaderboardData:
    """Decode train, the threshold split and test of `dataset`; refuse splits that lack good or
    defect images, and warn about subtypes with no training images."""
    from visionline.data import DatasetRepo

    repo = DatasetRepo(project)
    version = repo.get(dataset)
    class_names = project.config.model_classes()
    has_calib = bool(version.split_records(CALIBRATION_SPLIT))
    threshold_split = CALIBRATION_SPLIT if has_calib else FALLBACK_SPLIT
    train = _load(repo, version, "train", class_names)
    calib = _load(repo, version, threshold_split, class_names)
    test = _load(repo, version, "test", class_names)
    warnings = []
    if not has_calib:
        warnings.append(
            f"{version.short_id} has no '{CALIBRATION_SPLIT}' split, so thresholds and stacking use "
            f"'{FALLBACK_SPLIT}', which fine-tuning also selects epochs on; add one with "
            "'visionline data split --calib 0.15' for an honest false-reject rate."
        )
    missing = [c for i, c in enumerate(class_names) if not (train.labels == i).any()]
    if missing:
        warnings.append(
            f"No training images of {', '.join(missing)}; supervised entries cannot learn them."
        )
    return LeaderboardData(version, repo, class_names, train, calib, test, warnings)
