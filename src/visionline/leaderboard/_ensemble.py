"""The anomaly entry (a PatchCore-style detector fitted on good images through
`visionline.anomaly.fit_anomaly`) and the stacked ensemble of the best supervised entry with it.

The stack is a logistic regression on the two entries' scores, fitted on the threshold split.
Its own threshold is set on out-of-fold stacked scores of that split, so no image both fits the
stacker and sets the threshold that certifies it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from visionline.errors import DataError
from visionline.leaderboard._entry import (
    Context,
    Entry,
    Outcome,
    file_size,
    log_sklearn_model,
    measure_latency_ms,
    start_tracking,
)

if TYPE_CHECKING:
    from PIL import Image

SUPERVISED_KINDS = ("classical", "probe", "finetune")
MAX_FOLDS = 5
SCORE_EPS = 1e-6


def _checked(images: Sequence[Image.Image], check) -> Iterator[Image.Image]:
    for image in images:
        check()
        yield image


def run_anomaly(ctx: Context) -> Outcome:
    """Fit on the train split's good images (tracked by `fit_anomaly`), score threshold and test."""
    import torch

    from visionline.anomaly import (
        fit_anomaly,
        load_anomaly_config,
        load_anomaly_model,
        score_images,
    )

    config = load_anomaly_config(None, **{"seed": ctx.config.seed, **ctx.config.anomaly})
    ctx.check()
    fitted = fit_anomaly(
        config,
        ctx.data.version.id,
        ctx.project,
        out_dir=ctx.out_dir / "entries" / "anomaly",
        tracking_uri=ctx.tracking_uri,
        progress=ctx.progress,
    )
    _tag_run(ctx, fitted.run_id)
    ctx.check()
    model, spec = load_anomaly_model(fitted.model_path)
    prep = spec.preprocessing
    calib, _ = score_images(
        model, prep, _checked(ctx.data.calib.images, ctx.check), config.batch_size
    )
    test, _ = score_images(
        model, prep, _checked(ctx.data.test.images, ctx.check), config.batch_size
    )
    latency = measure_latency_ms(
        lambda image: model(torch.from_numpy(prep([image]))),
        ctx.data.calib.images,
        ctx.config.latency_threads,
    )
    return Outcome(
        calib_scores=calib.astype(np.float64),
        test_scores=test.astype(np.float64),
        size_bytes=file_size(fitted.model_path),
        latency_ms=latency,
        run_id=fitted.run_id,
        model_path=fitted.model_path,
        details={"bank_size": fitted.stats.bank_size, "image_size": prep.size},
    )


def _tag_run(ctx: Context, run_id: str | None) -> None:
    if run_id is None:
        return
    from visionline.registry._resolve import client

    mlflow_client = client(ctx.tracking_uri)
    for key, value in ctx.tags("anomaly").items():
        mlflow_client.set_tag(run_id, key, value)


def stack_parts(entries: Sequence[Entry]) -> tuple[Entry, Entry]:
    """(best finished supervised entry by the threshold-split ranking, the anomaly entry)."""
    from visionline.leaderboard._scoring import rank_key

    supervised = sorted(
        (e for e in entries if e.finished and e.kind in SUPERVISED_KINDS), key=rank_key
    )
    anomaly = [e for e in entries if e.finished and e.kind == "anomaly"]
    if not supervised or not anomaly:
        raise DataError(
            "The stack needs a finished supervised entry and a finished anomaly entry; "
            "raise --budget-min or include both families."
        )
    return supervised[0], anomaly[0]


def _stack_features(supervised: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    clipped = np.clip(supervised, SCORE_EPS, 1.0 - SCORE_EPS)
    return np.column_stack([np.log(clipped / (1.0 - clipped)), anomaly])


def run_stack(ctx: Context) -> Outcome:
    """Logistic regression on (logit of the supervised score, anomaly score) on the threshold split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    supervised, anomaly = stack_parts(ctx.entries)
    calib_x = _stack_features(supervised.outcome.calib_scores, anomaly.outcome.calib_scores)
    test_x = _stack_features(supervised.outcome.test_scores, anomaly.outcome.test_scores)
    target = ctx.data.calib.is_defect.astype(int)
    folds = min(MAX_FOLDS, int(np.bincount(target, minlength=2).min()))
    if folds < 2:
        raise DataError(
            f"The {ctx.data.threshold_split} split needs at least two good and two defect images "
            "to stack scores out of fold; add images to it."
        )
    stacker = make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", random_state=ctx.config.seed)
    )
    name = "stack"
    tracker = start_tracking(
        ctx,
        name,
        "stack",
        {
            "supervised": supervised.name,
            "supervised_run": supervised.outcome.run_id,
            "anomaly_run": anomaly.outcome.run_id,
            "folds": folds,
        },
    )
    try:
        cv = StratifiedKFold(folds, shuffle=True, random_state=ctx.config.seed)
        calib_scores = cross_val_predict(stacker, calib_x, target, cv=cv, method="predict_proba")[
            :, 1
        ]
        stacker.fit(calib_x, target)
        test_scores = stacker.predict_proba(test_x)[:, 1]
        log_sklearn_model(stacker, calib_x)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return Outcome(
        calib_scores=calib_scores,
        test_scores=test_scores,
        size_bytes=supervised.outcome.size_bytes
        + anomaly.outcome.size_bytes
        + len(pickle.dumps(stacker)),
        latency_ms=supervised.outcome.latency_ms + anomaly.outcome.latency_ms,
        run_id=tracker.run_id,
        details={"supervised": supervised.name, "anomaly": anomaly.name, "folds": folds},
    )
