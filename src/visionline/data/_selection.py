"""Active learning: which unlabelled images an operator's hour should go to.

Labels are the most expensive input of the loop, so instead of "the most recent images" a
selection picks the ones that teach the model most: those whose defect score sits nearest the
decision threshold (uncertainty), those where two models decide differently (disagreement), or a
set that covers the image space (diversity: greedy k-centre on embeddings, starting from what is
already labelled). `mixed` takes half by uncertainty and fills the rest by diversity.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from visionline.errors import ConfigError, DataError

if TYPE_CHECKING:
    from visionline.data import BlobStore, ImageRecord

__all__ = [
    "ModelScores",
    "Selection",
    "Strategy",
    "k_centre",
    "load_scores",
    "pixel_embeddings",
    "select",
]


class Strategy(str, Enum):
    UNCERTAINTY = "uncertainty"
    DISAGREEMENT = "disagreement"
    DIVERSITY = "diversity"
    MIXED = "mixed"
    DRIFT = "drift"  # from the monitor only: images of drifted windows
    RANDOM = "random"


@dataclass(frozen=True)
class ModelScores:
    """One model's defect score per image (keyed by sha256) and its decision threshold."""

    name: str
    scores: dict[str, float]
    threshold: float


@dataclass(frozen=True)
class Selection:
    """Chosen pool indices, best first, with why each was chosen."""

    indices: list[int]
    reasons: list[str]


def load_scores(path: Path, threshold: float | None = None) -> ModelScores:
    """Read `visionline score` output (Parquet or CSV); the threshold comes from its
    `.summary.json` sidecar unless given."""
    import pandas as pd

    if not path.is_file():
        raise DataError(
            f"Scores file {path} does not exist; write it with `visionline score V --out FILE`."
        )
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise DataError(
            f"Scores file {path} cannot be read ({exc}); write it with `visionline score`."
        ) from exc
    if not {"sha256", "defect_score"} <= set(frame.columns):
        raise DataError(
            f"Scores file {path} lacks the sha256 and defect_score columns; write it with "
            "`visionline score V --out FILE`."
        )
    if threshold is None:
        sidecar = path.with_name(path.name.rsplit(".", 1)[0] + ".summary.json")
        if not sidecar.is_file():
            raise ConfigError(
                f"{path} has no {sidecar.name} with the model's threshold; pass --threshold."
            )
        threshold = float(json.loads(sidecar.read_text())["threshold"])
    scores = {
        str(sha): float(score)
        for sha, score in zip(frame["sha256"], frame["defect_score"], strict=True)
        if isinstance(sha, str) and not math.isnan(float(score))
    }
    return ModelScores(path.stem, scores, threshold)


def pixel_embeddings(
    records: Sequence[ImageRecord], blobs: BlobStore, side: int = 16
) -> np.ndarray:
    """A model-free embedding: each image as a standardised `side`×`side` RGB thumbnail."""
    from visionline.preprocessing import decode_image

    rows = []
    for record in records:
        image = decode_image(blobs.get(record.sha256)).convert("RGB").resize((side, side))
        rows.append(np.asarray(image, dtype=np.float32).ravel() / 255.0)
    matrix = np.stack(rows) if rows else np.zeros((0, side * side * 3), np.float32)
    return (matrix - matrix.mean(axis=0)) / (matrix.std(axis=0) + 1e-6)


def k_centre(embeddings: np.ndarray, budget: int, centres: np.ndarray | None = None) -> list[int]:
    """Greedy k-centre: repeatedly take the point farthest from every centre so far.

    `centres` are the embeddings of images already labelled; without them the first pick is the
    point nearest the mean, so the result does not depend on row order.
    """
    n = len(embeddings)
    budget = min(budget, n)
    if budget <= 0:
        return []
    if centres is not None and len(centres):
        distance = np.min(_squared(embeddings, centres), axis=1)
        picks: list[int] = []
    else:
        first = int(np.argmin(_squared(embeddings, embeddings.mean(axis=0, keepdims=True))[:, 0]))
        picks = [first]
        distance = _squared(embeddings, embeddings[first : first + 1])[:, 0]
    while len(picks) < budget:
        distance[picks] = -1.0
        pick = int(np.argmax(distance))
        picks.append(pick)
        distance = np.minimum(distance, _squared(embeddings, embeddings[pick : pick + 1])[:, 0])
    return picks


def _squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(
        (a * a).sum(axis=1)[:, None] - 2.0 * a @ b.T + (b * b).sum(axis=1)[None, :], 0.0
    )


def _uncertainty(scores: np.ndarray, threshold: float, budget: int) -> Selection:
    margin = np.abs(scores - threshold)
    order = np.argsort(margin, kind="stable")[:budget]
    return Selection(
        [int(i) for i in order],
        [
            f"score {scores[i]:.3f}, {margin[i]:.3f} from the threshold {threshold:.3f}"
            for i in order
        ],
    )


def _disagreement(
    a: ModelScores, b: ModelScores, sa: np.ndarray, sb: np.ndarray, budget: int
) -> Selection:
    differ = (sa >= a.threshold) != (sb >= b.threshold)
    # decisions that differ first, then by how far apart the scores are
    order = np.lexsort((-np.abs(sa - sb), ~differ))[:budget]
    return Selection(
        [int(i) for i in order],
        [
            f"{a.name} {sa[i]:.3f} vs {b.name} {sb[i]:.3f}"
            + (" (decisions differ)" if differ[i] else "")
            for i in order
        ],
    )


def select(
    strategy: Strategy,
    budget: int,
    *,
    n_pool: int,
    scores: Sequence[np.ndarray] = (),
    models: Sequence[ModelScores] = (),
    embeddings: np.ndarray | None = None,
    labelled_embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> Selection:
    """Pick up to `budget` of `n_pool` images; `scores[i]` are `models[i]`'s pool scores."""
    if budget < 1:
        raise ConfigError(f"--budget is {budget}; ask for at least one image.")
    if n_pool == 0:
        raise DataError(
            "The pool is empty: every image of the version is labelled; pass --include-labelled "
            "or pick a version with unlabelled images."
        )
    budget = min(budget, n_pool)
    if strategy is Strategy.DRIFT:
        raise ConfigError(
            "--strategy drift picks from drifted windows of the prediction log; use it with "
            "--from-monitor."
        )
    if strategy is Strategy.RANDOM:
        order = np.random.default_rng(seed).permutation(n_pool)[:budget]
        return Selection([int(i) for i in order], [f"random (seed {seed})"] * budget)
    if strategy in (Strategy.UNCERTAINTY, Strategy.MIXED) and not scores:
        raise ConfigError(f"--strategy {strategy.value} needs model scores; pass --scores FILE.")
    if strategy is Strategy.DISAGREEMENT:
        if len(scores) != 2:
            raise ConfigError(
                "--strategy disagreement needs two models' scores; pass --scores twice "
                "(champion and challenger, or classifier and anomaly model)."
            )
        return _disagreement(models[0], models[1], scores[0], scores[1], budget)
    if strategy is Strategy.UNCERTAINTY:
        return _uncertainty(scores[0], models[0].threshold, budget)
    if embeddings is None:
        raise ConfigError(f"--strategy {strategy.value} needs embeddings of the pool.")
    if strategy is Strategy.DIVERSITY:
        picks = k_centre(embeddings, budget, labelled_embeddings)
        return Selection(
            picks, ["k-centre: farthest from everything chosen or labelled"] * len(picks)
        )
    first = _uncertainty(scores[0], models[0].threshold, (budget + 1) // 2)
    chosen = set(first.indices)
    rest = [i for i in range(n_pool) if i not in chosen]
    centres = embeddings[first.indices]
    if labelled_embeddings is not None and len(labelled_embeddings):
        centres = np.concatenate([labelled_embeddings, centres])
    extra = [rest[i] for i in k_centre(embeddings[rest], budget - len(chosen), centres)]
    return Selection(
        first.indices + extra,
        first.reasons + ["k-centre: farthest from everything chosen or labelled"] * len(extra),
    )
