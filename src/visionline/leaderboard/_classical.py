"""Classical entries: hand-made colour/texture/shape features with logistic regression and
gradient boosting. Their models are scikit-learn estimators on the features, logged as MLflow
sklearn models; `visionline export` and `serve` take torch classifiers only."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from visionline.leaderboard._entry import (
    Context,
    Outcome,
    full_probabilities,
    log_sklearn_model,
    measure_latency_ms,
    start_tracking,
)
from visionline.leaderboard._features import (
    FEATURE_SIZE,
    GABOR_FREQUENCIES,
    GLCM_LEVELS,
    HSV_BINS,
    LBP_SETTINGS,
    classical_features,
    image_features,
)

FEATURES = (
    f"hsv{HSV_BINS}+lbp{list(LBP_SETTINGS)}+glcm{GLCM_LEVELS}+gabor{len(GABOR_FREQUENCIES)}x4"
    f"+local_contrast+hog@{FEATURE_SIZE}px"
)
CLASSICAL_MODELS = ("logreg", "gboost")


def _features(ctx: Context) -> dict[str, np.ndarray]:
    """Features of train, threshold and test images, computed once for both classical entries."""
    if "classical" not in ctx.cache:
        check = ctx.check
        ctx.cache["classical"] = {
            split.name: classical_features(split.images, check)
            for split in (ctx.data.train, ctx.data.calib, ctx.data.test)
        }
    return ctx.cache["classical"]


def _estimator(model: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "logreg":
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced", random_state=seed),
        )
    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, class_weight="balanced", random_state=seed
    )


def run_classical(ctx: Context, model: str) -> Outcome:
    """Fit `model` (logreg or gboost) on the train features; score threshold and test images."""
    features = _features(ctx)
    data = ctx.data
    train_x = features[data.train.name]
    estimator = _estimator(model, ctx.config.seed)
    tracker = start_tracking(
        ctx, f"classical/{model}", "classical", {"model": model, "features": FEATURES}
    )
    try:
        estimator.fit(train_x, data.train.labels)
        classes = estimator.classes_
        n = len(data.class_names)

        def probabilities(x: np.ndarray) -> np.ndarray:
            return full_probabilities(classes, estimator.predict_proba(x), n)

        calib_p = probabilities(features[data.calib.name])
        test_p = probabilities(features[data.test.name])
        latency = measure_latency_ms(
            lambda image: estimator.predict_proba(image_features(image)[None]),
            data.calib.images,
            ctx.config.latency_threads,
        )
        log_sklearn_model(estimator, train_x)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return Outcome(
        calib_scores=1.0 - calib_p[:, 0],
        test_scores=1.0 - test_p[:, 0],
        size_bytes=len(pickle.dumps(estimator)),
        latency_ms=latency,
        run_id=tracker.run_id,
        calib_probabilities=calib_p,
        test_probabilities=test_p,
        details={"features": FEATURES, "feature_dim": int(train_x.shape[1])},
    )
