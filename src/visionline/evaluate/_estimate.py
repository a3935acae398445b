"""How many bad apples are in a delivery: flagged rates corrected with the validated error rates.

The flagged share of a delivery is biased: false rejects add to it and escapes take from it. The
Rogan–Gladen estimator p̂ = (flag − FPR) / (TPR − FPR) removes that bias. Its interval comes from
posterior draws (Jeffreys Beta priors) of the validation TPR and FPR, each followed by the
classification noise of this delivery's flag count given those rates (normal approximation), so a
small delivery and a small validation set both widen it. The target is the share of bad apples in
the delivery itself (every apple passes the camera), not a hypothetical supply rate.

When a delivery's defect mix differs from the test split's (one supplier sends mostly bruises,
which the model misses more often than rot), one TPR mis-corrects it: `estimate_prevalence_classes`
corrects each called class with the confusion matrix instead, and `condition_spread` widens its
interval by how much the recall moves between conditions such as apple varieties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

FLAG_COLUMNS = ("flagged", "flag", "defect_flag", "is_defect")
SCORE_COLUMNS = ("defect_score", "score")
SUBTYPE_COLUMNS = ("predicted_subtype", "subtype", "predicted_class")
TIME_COLUMNS = ("timestamp", "time", "ts")


@dataclass(frozen=True)
class ValidatedRates:
    """Counts from a held-out evaluation at the operating threshold."""

    tp: int
    n_defect: int
    fp: int
    n_good: int
    threshold: float | None = None
    class_names: tuple[str, ...] | None = None
    confusion_matrix: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.n_defect <= 0 or self.n_good <= 0:
            raise DataError(
                "The validated rates need both good and defective test images; evaluate on a "
                "split that has both."
            )
        if self.tpr <= self.fpr:
            raise DataError(
                f"The model is no better than chance (TPR {self.tpr:.1%} ≤ FPR {self.fpr:.1%}), so "
                "flag rates cannot be corrected; retrain or re-evaluate the model."
            )

    @property
    def tpr(self) -> float:
        return self.tp / self.n_defect

    @property
    def fpr(self) -> float:
        return self.fp / self.n_good

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> ValidatedRates:
        """From an eval metrics.json (its `rates` block)."""
        rates = metrics.get("rates", metrics)
        try:
            matrix = rates.get("confusion_matrix")
            names = rates.get("class_names")
            return cls(
                tp=int(rates["tp"]),
                n_defect=int(rates["n_defect"]),
                fp=int(rates["fp"]),
                n_good=int(rates["n_good"]),
                threshold=rates.get("threshold"),
                class_names=tuple(names) if names else None,
                confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix)
                if matrix
                else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"The rates file lacks the count {exc}; pass the metrics.json written by 'visionline eval'."
            ) from exc


@dataclass(frozen=True)
class Estimate:
    """A rate with its interval."""

    n: int
    flagged: int
    raw_rate: float
    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rogan_gladen(
    flag_rate: float | np.ndarray, tpr: float | np.ndarray, fpr: float | np.ndarray
) -> Any:
    """Prevalence corrected for false positives and misses, clipped to [0, 1]."""
    return np.clip((np.asarray(flag_rate) - fpr) / (np.asarray(tpr) - fpr), 0.0, 1.0)


def _beta(rng: np.random.Generator, k: int, n: int, draws: int) -> np.ndarray:
    return rng.beta(k + 0.5, n - k + 0.5, draws)


def _bad_draws(
    flagged: int, n: int, rates: ValidatedRates, rng: np.random.Generator, draws: int
) -> np.ndarray:
    """Posterior draws of how many of `n` judged items are bad, given `flagged` of them were
    flagged by a model validated as `rates`: the TPR and FPR drawn from their Jeffreys Beta
    posteriors (draws where TPR ≤ FPR are dropped), each followed by the classification noise of
    this flag count given those rates, flagged = Bin(bad, TPR) + Bin(good, FPR) inverted with its
    conditional (normal) spread, so the target is the group's own count, not a supply rate."""
    tpr = _beta(rng, rates.tp, rates.n_defect, draws)
    fpr = _beta(rng, rates.fp, rates.n_good, draws)
    valid = tpr > fpr
    tpr, fpr = tpr[valid], fpr[valid]
    bad = np.clip((flagged - n * fpr) / (tpr - fpr), 0.0, n)
    spread = np.sqrt(bad * tpr * (1 - tpr) + (n - bad) * fpr * (1 - fpr)) / (tpr - fpr)
    return np.clip(bad + spread * rng.standard_normal(bad.size), 0.0, n)


def estimate_prevalence(
    flagged: int,
    n: int,
    rates: ValidatedRates,
    confidence: float = 0.90,
    draws: int = 4000,
    seed: int = 0,
) -> Estimate:
    """Corrected defect rate of one group with an interval for group AND validation uncertainty."""
    return estimate_prevalence_parts([(flagged, n, rates)], confidence, draws, seed)


def estimate_prevalence_parts(
    parts: Sequence[tuple[int, int, ValidatedRates]],
    confidence: float = 0.90,
    draws: int = 4000,
    seed: int = 0,
) -> Estimate:
    """Corrected defect rate of one group whose items were judged in parts by different models,
    each part a (flagged, n, rates of the model that judged it): a delivery during which the
    line switched to a new model version. The group's bad items are the sum of each part's
    Rogan–Gladen count, and its interval sums the parts' posterior draws, so the estimate is of
    the whole group rather than one row per model whose truth is not known on its own."""
    if not parts:
        raise DataError("A group has no judged parts; pass at least one (flagged, n, rates).")
    if any(n <= 0 for _, n, _ in parts):
        raise DataError("A group has no images; drop empty groups before estimating.")
    rng = np.random.default_rng(seed)
    counts = [_bad_draws(flagged, n, rates, rng, draws) for flagged, n, rates in parts]
    kept = min(c.size for c in counts)  # iid draws: trimming to a common length keeps them so
    total = sum(n for _, n, _ in parts)
    samples = sum(c[:kept] for c in counts) / total
    flagged = sum(f for f, _, _ in parts)
    point = sum(float(rogan_gladen(f / n, r.tpr, r.fpr)) * n for f, n, r in parts) / total
    alpha = (1.0 - confidence) / 2
    return Estimate(
        n=total,
        flagged=flagged,
        raw_rate=flagged / total,
        estimate=point,
        low=float(np.quantile(samples, alpha)),
        high=float(np.quantile(samples, 1 - alpha)),
    )


def condition_spread(strata: Sequence[tuple[int, int]]) -> float:
    """Between-condition standard deviation of the recall on the logit scale, from (caught,
    defects) counted under each condition (variety, lighting, …): the DerSimonian–Laird
    random-effects estimate, the spread left after each stratum's own binomial noise. It is 0
    when the strata differ no more than chance would make them."""
    counts = [(k, n) for k, n in strata if n > 0]
    if len(counts) < 2:
        return 0.0
    k = np.array([c for c, _ in counts], dtype=np.float64) + 0.5
    miss = np.array([n - c for c, n in counts], dtype=np.float64) + 0.5
    logit, weight = np.log(k / miss), 1.0 / (1.0 / k + 1.0 / miss)
    mean = float(np.sum(weight * logit) / weight.sum())
    q = float(np.sum(weight * (logit - mean) ** 2))
    scale = float(weight.sum() - np.sum(weight**2) / weight.sum())
    return float(np.sqrt(max(0.0, (q - (len(counts) - 1)) / scale)))


def _shift_recalls(confusion: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Confusion matrices (chains, K, K) with every defect row's recall (1 − share called good)
    moved by that chain's `shift` on the logit scale, the called defect classes kept in
    proportion: a condition under which the model catches every subtype more or less easily."""
    recall = np.clip(1.0 - confusion[:, 1:, 0], 1e-6, 1 - 1e-6)
    moved = 1.0 / (1.0 + np.exp(-(np.log(recall / (1 - recall)) + shift[:, None])))
    shifted = confusion.copy()
    shifted[:, 1:, 1:] *= (moved / recall)[:, :, None]
    shifted[:, 1:, 0] = 1.0 - moved
    return shifted


def _class_draws(
    counts: np.ndarray, start: np.ndarray, rates: ValidatedRates, spread: float,
    rng: np.random.Generator, draws: int, sweeps: int = 30,
) -> np.ndarray:
    """Posterior draws of how many of a part's items are bad, from the count of its items called
    each class (good first), by the Gibbs sampler for misclassified counts: each chain draws the
    confusion matrix from its Dirichlet posteriors (rows true, columns called; counted on held-out
    images; per row the Jeffreys prior of called good against called bad) and one recall shift from the between-condition `spread`, then alternates giving each
    called item a true class (in proportion to share × P(called | true)) and redrawing the
    shares. The last sweep's true classes are one draw of this part's own composition."""
    matrix = np.asarray(rates.confusion_matrix, dtype=np.float64)
    k = matrix.shape[0]
    prior = np.full(k, 0.5 / (k - 1))
    prior[0] = 0.5  # Jeffreys for good against bad, the bad half split over the subtypes
    confusion = rng.gamma(matrix[None] + prior, size=(draws, k, k))
    confusion /= confusion.sum(axis=2, keepdims=True)
    if spread > 0:
        confusion = _shift_recalls(confusion, spread * rng.standard_normal(draws))
    shares = np.tile(np.clip(start, 1e-3, None), (draws, 1))
    called = counts.astype(np.int64)
    for _ in range(sweeps):
        true = np.zeros((draws, k))
        for j in np.flatnonzero(called):
            weight = shares * confusion[:, :, j]
            true += rng.multinomial(called[j], weight / weight.sum(axis=1, keepdims=True))
        shares = rng.gamma(true + prior)
        shares /= shares.sum(axis=1, keepdims=True)
    return counts.sum() - true[:, 0]


def estimate_prevalence_classes(
    parts: Sequence[tuple[dict[str, int], int, ValidatedRates]],
    confidence: float = 0.90,
    spread: float = 0.0,
    draws: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Corrected defect rate of one group from the classes its flagged items were called, each
    part a (count flagged per called defect class, n, rates with the confusion matrix at the
    operating threshold). A delivery's subtype mix sets its recall (bruises are missed far more
    often than rot), so one TPR counted on a test split of another mix under- or over-corrects;
    the matrix corrects each called class by how often that subtype is caught and confused.
    `spread` (`condition_spread`) widens the interval by how much the recall moves between
    conditions the matrix was not counted apart for. The estimate is the posterior median, so it
    always lies inside its interval (on 32 clean synthetic deliveries it was also nearer the
    truth than the least-squares correction: 2.19 against 2.35 points,
    `benchmarks/estimate_line.py`)."""
    if not parts:
        raise DataError("A group has no judged parts; pass at least one (counts, n, rates).")
    rng = np.random.default_rng(seed)
    total = 0.0
    samples = np.zeros(draws)
    flagged = 0
    for called, n, rates in parts:
        names = list(rates.class_names or ())
        if not names or rates.confusion_matrix is None:
            raise DataError(
                "The rates lack the confusion matrix per class; pass rates counted per class "
                "at the operating threshold."
            )
        if n <= 0:
            raise DataError("A group has no images; drop empty groups before estimating.")
        unknown = set(called) - set(names[1:])
        if unknown:
            raise DataError(
                f"Called classes {sorted(unknown)} are not defect classes of the model "
                f"({', '.join(names)}); use the rates of the model that judged the part."
            )
        counts = np.array([called.get(name, 0) for name in names], dtype=np.float64)
        counts[0] = n - counts[1:].sum()
        if counts[0] < 0:
            raise DataError(f"A part counts more flagged items than its {n} images; fix n.")
        matrix = np.asarray(rates.confusion_matrix, dtype=np.float64)
        rows = np.divide(matrix, np.maximum(matrix.sum(axis=1, keepdims=True), 1))
        start = _unmix(rows, counts / n)  # the least-squares correction starts each chain
        samples += _class_draws(counts, start, rates, spread, rng, draws)
        total += n
        flagged += int(n - counts[0])
    alpha = (1.0 - confidence) / 2
    return Estimate(
        n=int(total),
        flagged=flagged,
        raw_rate=flagged / total,
        estimate=float(np.median(samples / total)),
        low=float(np.quantile(samples / total, alpha)),
        high=float(np.quantile(samples / total, 1 - alpha)),
    )


def _unmix(confusion: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """True class shares p ≥ 0, Σp = 1, with confusionᵀ p ≈ observed shares (NNLS)."""
    from scipy.optimize import nnls

    weight = 100.0
    system = np.vstack([confusion.T, weight * np.ones(confusion.shape[0])])
    target = np.concatenate([observed, [weight]])
    shares, _ = nnls(system, target)
    total = shares.sum()
    return shares / total if total > 0 else shares


def estimate_subtypes(
    counts: dict[str, int],
    n: int,
    rates: ValidatedRates,
    confidence: float = 0.90,
    draws: int = 400,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per defect subtype: raw share predicted, and the share corrected with the validated
    subtype confusion matrix (rows = true, columns = predicted) with an interval."""
    names = list(rates.class_names or ())
    if not names or rates.confusion_matrix is None:
        return {name: {"raw_rate": count / n} for name, count in counts.items()}
    unknown = set(counts) - set(names[1:])
    if unknown:
        raise DataError(
            f"Predicted subtypes {sorted(unknown)} are not classes of the evaluated model "
            f"({', '.join(names)}); use the rates of the model that made the predictions."
        )
    matrix = np.asarray(rates.confusion_matrix, dtype=np.float64)
    observed_counts = np.array([counts.get(name, 0) for name in names], dtype=np.float64)
    observed_counts[0] = n - observed_counts[1:].sum()
    row_sums = matrix.sum(axis=1, keepdims=True)
    point = _unmix(np.divide(matrix, np.maximum(row_sums, 1)), observed_counts / n)
    rng = np.random.default_rng(seed)
    samples = np.empty((draws, len(names)))
    for draw in range(draws):
        sampled = np.vstack([rng.dirichlet(row + 0.5) for row in matrix])
        samples[draw] = _unmix(sampled, rng.dirichlet(observed_counts + 0.5))
    alpha = (1.0 - confidence) / 2
    return {
        name: {
            "raw_rate": observed_counts[i] / n,
            "estimate": float(point[i]),
            "low": float(np.quantile(samples[:, i], alpha)),
            "high": float(np.quantile(samples[:, i], 1 - alpha)),
        }
        for i, name in enumerate(names)
        if i > 0
    }


def load_predictions(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet prediction log."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"No predictions file at {path}; pass a CSV or Parquet file.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for bad files
        raise DataError(
            f"{path} is not a readable CSV or Parquet file ({type(exc).__name__}); check its format."
        ) from exc


def _pick(frame: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((name for name in names if name in frame.columns), None)


FLAG_WORDS = {"1": True, "true": True, "yes": True, "defect": True,
              "0": False, "false": False, "no": False, "good": False, "": False}
"""How a text flag column may say flagged or kept (case-insensitive; empty = kept)."""


def _text_flags(words: pd.Series, column: str) -> np.ndarray:
    """Flags from words; any other word is refused, since counting it either way would bias
    the estimate silently (pandas 3 reads such a column as strings, not objects)."""
    unknown = sorted(set(words) - FLAG_WORDS.keys())
    if unknown:
        raise DataError(
            f"Column '{column}' holds {unknown[:3]}; write each flag as one of "
            f"{', '.join(repr(w) for w in FLAG_WORDS if w)} (or leave it empty for kept)."
        )
    return words.map(FLAG_WORDS).to_numpy(dtype=bool)


def _flags(
    frame: pd.DataFrame, rates: ValidatedRates | None, threshold: float | None
) -> np.ndarray:
    flag_column = _pick(frame, FLAG_COLUMNS)
    if flag_column is not None:
        from pandas.api.types import is_string_dtype

        values = frame[flag_column]
        if values.dtype == object or is_string_dtype(values):
            return _text_flags(values.fillna("").astype(str).str.strip().str.lower(), flag_column)
        return values.fillna(0).astype(bool).to_numpy()
    score_column = _pick(frame, SCORE_COLUMNS)
    if score_column is None:
        raise DataError(
            f"The predictions need a flag column ({', '.join(FLAG_COLUMNS)}) or a score column "
            f"({', '.join(SCORE_COLUMNS)}); add one."
        )
    threshold = threshold if threshold is not None else (rates.threshold if rates else None)
    if threshold is None:
        raise ConfigError(
            "The predictions hold scores but no threshold is known; pass --rates metrics.json or --threshold."
        )
    return frame[score_column].to_numpy(dtype=np.float64) > threshold


def estimate_by_group(
    frame: pd.DataFrame,
    by: str,
    rates: ValidatedRates | None,
    threshold: float | None = None,
    confidence: float = 0.90,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per group: images, flagged, raw rate, corrected estimate + interval, subtypes."""
    frame = frame.copy()
    if by not in frame.columns and by == "day":
        time_column = _pick(frame, TIME_COLUMNS)
        if time_column is not None:
            import pandas as pd

            frame["day"] = pd.to_datetime(frame[time_column], errors="coerce").dt.date.astype(str)
    if by not in frame.columns:
        raise DataError(
            f"The predictions have no column {by!r} (columns: {', '.join(map(str, frame.columns))}); "
            "pick another --by or add the column."
        )
    frame["_flag"] = _flags(frame, rates, threshold)
    subtype_column = _pick(frame, SUBTYPE_COLUMNS)
    rows = []
    for offset, (group, part) in enumerate(frame.groupby(by, sort=True)):
        n, flagged = len(part), int(part["_flag"].sum())
        row: dict[str, Any] = {by: str(group), "n": n, "flagged": flagged, "raw_rate": flagged / n}
        if rates is not None:
            found = estimate_prevalence(flagged, n, rates, confidence, seed=seed + offset)
            row.update(estimate=found.estimate, low=found.low, high=found.high)
        if subtype_column is not None:
            predicted = part.loc[part["_flag"], subtype_column].dropna().astype(str)
            counts = {name: int(count) for name, count in predicted.value_counts().items()}
            if rates is not None and rates.class_names:
                counts = {k: v for k, v in counts.items() if k != rates.class_names[0]}
                row["subtypes"] = estimate_subtypes(
                    counts, n, rates, confidence, seed=seed + offset
                )
            else:
                row["subtypes"] = {name: {"raw_rate": count / n} for name, count in counts.items()}
        rows.append(row)
    return rows
