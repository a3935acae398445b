"""Active learning from the production log: pick which kept images the operator labels next.

The monitor keeps some images (flagged, borderline, sampled) in the blob store with the model's
score, threshold and embedding; this picks among those that have no feedback yet, by the same
strategies as `select`, plus `drift`: images from windows the drift detectors flagged, the most
uncertain first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from visionline.data._selection import ModelScores, Selection, Strategy, select
from visionline.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from visionline.monitor import MonitorDB

__all__ = ["MonitorPick", "select_from_monitor"]


@dataclass(frozen=True)
class MonitorPick:
    """One logged prediction chosen for labelling."""

    prediction_id: str
    sha256: str
    predicted_class: str
    score: float  # the model's probability of its predicted class
    reason: str


def _pool(db: MonitorDB, model: str, since: float | None) -> pd.DataFrame:
    frame = db.frame(model=model, since=since)
    frame = frame[frame["image_sha256"].notna()]
    labelled = set(db.feedback_frame().get("prediction_id", []))
    frame = frame[~frame["id"].isin(labelled)]
    return frame.drop_duplicates("image_sha256", keep="last").reset_index(drop=True)


def _drifted(db: MonitorDB, model: str, frame: pd.DataFrame) -> np.ndarray:
    windows = db.windows_frame(model)
    inside = np.zeros(len(frame), dtype=bool)
    if len(windows):
        for window in windows[windows["drifted"]].itertuples():
            inside |= ((frame["ts"] >= window.start_ts) & (frame["ts"] <= window.end_ts)).to_numpy()
    return inside


def select_from_monitor(
    db: MonitorDB,
    model: str,
    strategy: Strategy,
    budget: int,
    *,
    since: float | None = None,
    seed: int = 0,
) -> tuple[list[MonitorPick], int]:
    """The chosen kept images (best first) and the size of the pool they came from."""
    if strategy is Strategy.DISAGREEMENT:
        raise ConfigError(
            "--from-monitor has one model's scores per image; use --strategy uncertainty, "
            "diversity, mixed, drift or random, or --data V with two --scores files."
        )
    frame = _pool(db, model, since)
    if frame.empty:
        raise DataError(
            f"The monitor holds no kept, unlabelled images of model {model!r}"
            + (" since then" if since is not None else "")
            + "; log predictions with image sampling on, or pass an earlier --since."
        )
    if strategy in (Strategy.DIVERSITY, Strategy.MIXED) and frame["embedding"].notna().any():
        # Fail-safe verdicts (a missed deadline, an unreadable frame) carry no model output and
        # so no embedding: they leave the pool instead of failing the whole selection.
        frame = frame[frame["embedding"].notna()].reset_index(drop=True)
    scores = frame["defect_score"].to_numpy(float)
    margin = np.abs(scores - frame["threshold"].to_numpy(float))
    thresholds = frame["threshold"].to_numpy(float)
    if strategy in (Strategy.DRIFT, Strategy.UNCERTAINTY):
        candidates = np.arange(len(frame))
        if strategy is Strategy.DRIFT:
            candidates = np.flatnonzero(_drifted(db, model, frame))
            if not len(candidates):
                raise DataError(
                    f"No kept, unlabelled image of model {model!r} lies in a drifted window; "
                    "run `visionline monitor drift` first, or pick another --strategy."
                )
        order = candidates[np.argsort(margin[candidates], kind="stable")][:budget]
        prefix = "drifted window; " if strategy is Strategy.DRIFT else ""
        chosen = Selection([int(i) for i in order], [prefix + "score"] * len(order))
    else:
        embeddings = None
        if strategy in (Strategy.DIVERSITY, Strategy.MIXED):
            if frame["embedding"].isna().any():
                raise DataError(
                    "Some kept predictions were logged without embeddings, which diversity "
                    "needs; use --strategy uncertainty or drift."
                )
            embeddings = np.stack(
                [np.frombuffer(b, dtype=np.float16).astype(np.float32) for b in frame["embedding"]]
            )
        # each row has its own threshold, so rank the distance to it (a threshold of 0)
        chosen = select(
            strategy,
            budget,
            n_pool=len(frame),
            scores=[margin],
            models=[ModelScores(model, {}, 0.0)],
            embeddings=embeddings,
            seed=seed,
        )
    picks = []
    for index, reason in zip(chosen.indices, chosen.reasons, strict=True):
        row = frame.iloc[index]
        if reason.startswith(("score", "drifted window; score")):
            reason = reason.split("score", 1)[0] + (
                f"score {scores[index]:.3f}, {margin[index]:.3f} from the threshold "
                f"{thresholds[index]:.3f}"
            )
        probability = (row["probabilities"] or {}).get(row["predicted_class"], row["defect_score"])
        picks.append(
            MonitorPick(
                str(row["id"]),
                str(row["image_sha256"]),
                str(row["predicted_class"]),
                float(probability),
                reason,
            )
        )
    return picks, len(frame)
