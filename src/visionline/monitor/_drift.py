"""Drift detectors against the bundle's reference, windows, and false-alarm control.

Detectors (each gives one p-value per window):
- `score_ks`: two-sample KS on the defect score, black-box shift detection (Rabanser et al. 2019);
- `class_chi2`: chi-square test of predicted-class counts, window against reference;
- `embedding_mmd`: MMD with an RBF kernel (median-heuristic bandwidth) and a permutation test, on
  a reduced sample projected onto the reference's top principal components;
- `quality_ks`: per-statistic KS on brightness, contrast, sharpness and colourfulness (Bonferroni
  within), whose directions explain *why*: sharpness and contrast down → dirty lens.

False alarms: within a window, Holm's step-down procedure across the detectors keeps the
family-wise error at `alpha`; across windows, an alarm needs `persistence` consecutive drifted
windows and is raised once per episode (the streak must break before the next one), unless the
image-quality diagnosis finds a kind of cause the episode has not alarmed on yet (say a dirty lens
while a product-mix episode is running) for `persistence` windows: a new problem is never hidden
behind an old alarm, and an old one never alarms twice. With
alpha = 0.01 and persistence 2 on independent windows, the false-alarm rate is about 1e-4 per
window, i.e. about 0.02 alarms in 20,000 images at windows of 100.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionline.errors import ConfigError, DataError
from visionline.monitor._adapter import QUALITY_STATS, Reference


class Detector(str, Enum):
    """The drift detectors; each is one hypothesis in the Holm family of a window."""

    SCORE = "score_ks"
    CLASSES = "class_chi2"
    EMBEDDING = "embedding_mmd"
    QUALITY = "quality_ks"


class DriftConfig(BaseModel):
    """Windows and error control. A window closes after `size` images or `seconds`, whichever first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(100, ge=20, description="images per window")
    seconds: float | None = Field(None, gt=0, description="also close a window after this long")
    alpha: float = Field(0.01, gt=0, lt=0.5, description="family-wise error per window (Holm)")
    persistence: int = Field(2, ge=1, description="consecutive drifted windows before an alarm")
    permutations: int = Field(500, ge=50)
    mmd_rows: int = Field(100, ge=10, description="rows per side in the MMD test")
    components: int = Field(16, ge=1, description="principal components for the MMD test")
    detectors: tuple[Detector, ...] = tuple(Detector)
    seed: int = 0

    @classmethod
    def build(cls, **values: Any) -> DriftConfig:
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"Drift option '{where}' is invalid: {first['msg']}; fix it."
            ) from exc


@dataclass(frozen=True)
class TestResult:
    """One detector's outcome on one window."""

    detector: Detector
    statistic: float
    p_value: float
    n: int
    details: dict[str, Any] = field(default_factory=dict)


def ks_scores(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Two-sample KS on defect scores."""
    from scipy import stats  # here, not at the top: ~1 s of imports every monitor command paid

    result = stats.ks_2samp(reference, current)
    shift = float(np.median(current) - np.median(reference))
    return TestResult(
        Detector.SCORE,
        float(result.statistic),
        float(result.pvalue),
        len(current),
        {"median_shift": shift},
    )


def chi2_classes(
    reference_probs: np.ndarray, current_probs: np.ndarray, classes: Sequence[str]
) -> TestResult:
    """Chi-square test of homogeneity of predicted-class counts (reference vs window)."""
    k = reference_probs.shape[1]
    ref = np.bincount(np.argmax(reference_probs, axis=1), minlength=k)
    cur = np.bincount(np.argmax(current_probs, axis=1), minlength=k)
    keep = (ref + cur) > 0
    shares = {c: round(float(v), 4) for c, v in zip(classes, cur / max(cur.sum(), 1))}
    if keep.sum() < 2:
        return TestResult(Detector.CLASSES, 0.0, 1.0, int(cur.sum()), {"shares": shares})
    from scipy import stats

    statistic, p_value, _, _ = stats.chi2_contingency(np.vstack([ref[keep], cur[keep]]))
    return TestResult(
        Detector.CLASSES, float(statistic), float(p_value), int(cur.sum()), {"shares": shares}
    )


def _project(
    x: np.ndarray, mean: np.ndarray | None, components: np.ndarray | None, k: int
) -> np.ndarray:
    if components is None or mean is None or components.shape[1] != x.shape[1]:
        return x
    return (x - mean) @ components[:k].T


def mmd_permutation(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    permutations: int = 500,
    rows: int = 100,
    seed: int = 0,
) -> TestResult:
    """Unbiased MMD² with an RBF kernel (median heuristic) and a permutation p-value."""
    rng = np.random.default_rng(seed)
    x = reference[rng.choice(len(reference), min(rows, len(reference)), replace=False)]
    y = current[rng.choice(len(current), min(rows, len(current)), replace=False)]
    z = np.vstack([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    upper = d2[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(upper)) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    np.fill_diagonal(kernel, 0.0)
    n, m = len(x), len(y)
    labels = np.concatenate([np.ones(n), np.zeros(m)])

    def mmd2(masks: np.ndarray) -> np.ndarray:
        # masks: (P, n+m) with 1 for "reference"; unbiased MMD² per row
        a = masks
        b = 1.0 - masks
        kxx = np.einsum("pi,ij,pj->p", a, kernel, a) / (n * (n - 1))
        kyy = np.einsum("pi,ij,pj->p", b, kernel, b) / (m * (m - 1))
        kxy = np.einsum("pi,ij,pj->p", a, kernel, b) / (n * m)
        return kxx + kyy - 2 * kxy

    observed = float(mmd2(labels[None, :])[0])
    perms = np.stack([rng.permutation(labels) for _ in range(permutations)])
    null = mmd2(perms)
    p_value = (1.0 + float(np.sum(null >= observed))) / (1.0 + permutations)
    return TestResult(
        Detector.EMBEDDING,
        observed,
        p_value,
        len(current),
        {"bandwidth": bandwidth, "rows": [n, m]},
    )


def _ks_entry(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    from scipy import stats

    result = stats.ks_2samp(ref, cur)
    scale = float(np.std(ref)) or 1.0
    return {
        "ks": round(float(result.statistic), 4),
        "p_value": float(result.pvalue),
        "shift_sd": round(float((np.median(cur) - np.median(ref)) / scale), 3),
        "reference_median": round(float(np.median(ref)), 4),
        "median": round(float(np.median(cur)), 4),
    }


def _relative_sharpness(quality: np.ndarray) -> np.ndarray:
    """Laplacian variance over contrast²: unchanged by exposure, lowered only by blur."""
    return quality[:, 2] / (quality[:, 1] ** 2 + 1e-6)


def quality_tests(reference: np.ndarray, current: np.ndarray, alpha: float = 0.01) -> TestResult:
    """Per-statistic KS (Bonferroni within) with standardised median shifts and a likely cause.

    The detector's p-value covers the four logged statistics. Exposure-invariant sharpness
    (sharpness / contrast²) is tested too, only to tell blur from a darker image in the cause.
    """
    per = {name: _ks_entry(reference[:, i], current[:, i]) for i, name in enumerate(QUALITY_STATS)}
    k = len(QUALITY_STATS)
    p_values = [per[name]["p_value"] for name in QUALITY_STATS]
    worst = int(np.argmin(p_values))
    significant = {name for name, v in per.items() if v["p_value"] * k <= alpha}
    blur = _ks_entry(_relative_sharpness(reference), _relative_sharpness(current))
    if blur["p_value"] * (k + 1) <= alpha:
        significant.add("relative_sharpness")
    per["relative_sharpness"] = blur
    diagnosis = diagnose_quality(per, significant)
    return TestResult(
        Detector.QUALITY,
        float(per[QUALITY_STATS[worst]]["ks"]),
        min(1.0, p_values[worst] * k),
        len(current),
        {
            "statistics": per,
            "significant": sorted(significant),
            "cause": diagnosis[1] if diagnosis else None,
            "cause_kind": diagnosis[0] if diagnosis else None,
        },
    )


def diagnose_quality(
    per: dict[str, dict[str, float]], significant: set[str]
) -> tuple[str, str] | None:
    """A likely physical cause from which image statistics moved and in which direction, as
    (kind, sentence): the kind is the family of causes (optics, lighting, colour, image) that tells
    a drift episode's new problem from its old one; the sentence names the fix."""
    if not significant - {"relative_sharpness"}:
        return None

    def moved(name: str, sign: int) -> bool:
        return name in significant and np.sign(per[name]["shift_sd"]) == sign

    def sd(name: str) -> str:
        return f"{per[name]['shift_sd']:+.1f} SD"

    blurred = moved("relative_sharpness", -1)
    if blurred and moved("contrast", -1):
        return "optics", (
            f"dirty lens: sharpness {sd('sharpness')} (exposure-corrected {sd('relative_sharpness')}) "
            f"and contrast {sd('contrast')}; clean the lens and check the focus"
        )
    if blurred:
        return "optics", (
            f"blur: exposure-corrected sharpness {sd('relative_sharpness')}; clean the lens, check "
            "the focus, belt speed and exposure time"
        )
    colour_led = "colourfulness" in significant and abs(per["brightness"]["shift_sd"]) < 0.5 * abs(
        per["colourfulness"]["shift_sd"]
    )
    if "brightness" in significant and not colour_led:
        direction = "darker" if per["brightness"]["shift_sd"] < 0 else "brighter"
        extra = f", colourfulness {sd('colourfulness')}" if "colourfulness" in significant else ""
        return "lighting", (
            f"lighting or product change: images {direction} (brightness {sd('brightness')}{extra}); "
            f"check the lamps, exposure and white balance, or whether a {direction} variety is "
            "on the belt"
        )
    if "colourfulness" in significant:
        return "colour", (
            f"colour change: colourfulness {sd('colourfulness')}; a new product variety or a "
            "lamp/white-balance change"
        )
    moved_names = ", ".join(f"{n} {sd(n)}" for n in sorted(significant))
    return "image", f"image statistics changed ({moved_names}); check the camera and its settings"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Alarm:
    """A confirmed drift: what fired, its statistics and p-values, and the likely cause."""

    model: str
    version: str
    window: int
    ts: float
    detectors: list[str]
    statistics: dict[str, float]
    p_values: dict[str, float]
    cause: str
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WindowResult:
    """One closed window: every detector's result, Holm-adjusted p-values, and any alarm."""

    window: int
    start_index: int
    end_index: int
    start_ts: float
    end_ts: float
    results: list[TestResult]
    adjusted: dict[str, float]
    drifted: list[str]
    alarm: Alarm | None = None


def likely_cause(results: dict[str, TestResult], drifted: Sequence[str]) -> str:
    quality = results.get(Detector.QUALITY.value)
    if quality is not None and Detector.QUALITY.value in drifted and quality.details.get("cause"):
        return str(quality.details["cause"])
    if quality is not None and quality.details.get("cause"):
        return str(quality.details["cause"])
    return (
        "the products look different to the model (e.g. a new variety, a camera shift or a new "
        f"defect mix; {', '.join(drifted)}) while image quality is unchanged; label a sample of "
        "recent images and check the estimated performance"
    )


class DriftMonitor:
    """Feed predictions in order; closed windows are tested, recorded and may raise an alarm."""

    def __init__(
        self,
        reference: Reference,
        config: DriftConfig | None = None,
        db: Any | None = None,
        on_alarm: Sequence[Callable[[Alarm], None]] = (),
    ) -> None:
        self.reference = reference
        self.config = config or DriftConfig()
        self.db = db
        self.callbacks = list(on_alarm)
        k = self.config.components
        self._ref_embeddings = _project(
            reference.embeddings, reference.embedding_mean, reference.components, k
        )
        self._buffer: dict[str, list[Any]] = {
            "scores": [],
            "probs": [],
            "emb": [],
            "quality": [],
            "ts": [],
        }
        self._window = 0
        self._index = 0
        self._streak = 0
        self._in_episode = False
        self._episode_kinds: set[str | None] = set()
        self._new_kind: tuple[str | None, int] = (None, 0)
        self.history: list[WindowResult] = []

    def resume(self, next_window: int, streak: int, cause_kind: str | None = None) -> None:
        """Continue numbering, the persistence streak and the running episode's latest cause kind
        of an earlier run (from the log)."""
        self._window = next_window
        self._streak = streak
        self._in_episode = streak >= self.config.persistence
        self._episode_kinds = {cause_kind} if self._in_episode else set()

    def test(
        self,
        probabilities: np.ndarray,
        embeddings: np.ndarray | None,
        quality: np.ndarray | None,
        seed: int = 0,
    ) -> list[TestResult]:
        """Run every configured detector on one window of outputs."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.reference.classes):
            raise DataError(
                f"The window has probabilities of shape {probabilities.shape}, but the reference "
                f"model has {len(self.reference.classes)} classes; compare against the bundle "
                "that made these predictions."
            )
        ref = self.reference
        out = []
        for detector in self.config.detectors:
            if detector is Detector.SCORE:
                out.append(ks_scores(ref.scores, 1.0 - probabilities[:, 0]))
            elif detector is Detector.CLASSES:
                out.append(chi2_classes(ref.probabilities, probabilities, ref.classes))
            elif detector is Detector.EMBEDDING and embeddings is not None and len(embeddings):
                current = _project(
                    np.asarray(embeddings, np.float64),
                    ref.embedding_mean,
                    ref.components,
                    self.config.components,
                )
                out.append(
                    mmd_permutation(
                        self._ref_embeddings,
                        current,
                        permutations=self.config.permutations,
                        rows=self.config.mmd_rows,
                        seed=seed,
                    )
                )
            elif detector is Detector.QUALITY and quality is not None and len(quality):
                out.append(
                    quality_tests(ref.quality, np.asarray(quality, np.float64), self.config.alpha)
                )
        return out

    def update(
        self,
        probabilities: np.ndarray,
        embeddings: np.ndarray | None = None,
        quality: np.ndarray | None = None,
        ts: np.ndarray | Sequence[float] | None = None,
    ) -> list[WindowResult]:
        """Add a batch (in arrival order); returns the windows this batch closed."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        n = len(probabilities)
        times = np.asarray(ts if ts is not None else np.full(n, time.time()), dtype=np.float64)
        closed = []
        for i in range(n):
            buf = self._buffer
            if buf["ts"] and self.config.seconds and times[i] - buf["ts"][0] >= self.config.seconds:
                closed.append(self._close())
            buf["probs"].append(probabilities[i])
            buf["emb"].append(None if embeddings is None else embeddings[i])
            buf["quality"].append(None if quality is None else quality[i])
            buf["ts"].append(float(times[i]))
            self._index += 1
            if len(buf["ts"]) >= self.config.size:
                closed.append(self._close())
        return closed

    def _close(self) -> WindowResult:
        buf = self._buffer
        n = len(buf["ts"])
        embeddings = [e for e in buf["emb"] if e is not None]
        quality = [q for q in buf["quality"] if q is not None]
        results = self.test(
            np.stack(buf["probs"]),
            np.stack(embeddings) if embeddings else None,
            np.stack(quality) if quality else None,
            seed=self.config.seed + self._window,
        )
        adjusted = holm([r.p_value for r in results]) if results else np.array([])
        names = [r.detector.value for r in results]
        drifted = [name for name, p in zip(names, adjusted) if p <= self.config.alpha]
        window = WindowResult(
            window=self._window,
            start_index=self._index - n,
            end_index=self._index,
            start_ts=buf["ts"][0],
            end_ts=buf["ts"][-1],
            results=results,
            adjusted=dict(zip(names, (float(p) for p in adjusted))),
            drifted=drifted,
        )
        self._streak = self._streak + 1 if drifted else 0
        if not drifted:
            self._in_episode, self._episode_kinds = False, set()
        kind = self._cause_kind(window)
        if self._streak >= self.config.persistence and not self._in_episode:
            self._in_episode = True
            window.alarm = self._alarm(window)
        elif self._in_episode and self._is_new_cause(kind):
            window.alarm = self._alarm(window)
        if window.alarm is not None:
            self._episode_kinds.add(kind)
            self._new_kind = (None, 0)
        self._record(window)
        self.history.append(window)
        self._window += 1
        self._buffer = {key: [] for key in buf}
        return window

    @staticmethod
    def _cause_kind(window: WindowResult) -> str | None:
        """The quality diagnosis's kind when the quality detector itself drifted."""
        if Detector.QUALITY.value not in window.drifted:
            return None
        quality = next(r for r in window.results if r.detector is Detector.QUALITY)
        return quality.details.get("cause_kind")

    def _is_new_cause(self, kind: str | None) -> bool:
        """True once the same new kind of cause has held for `persistence` windows."""
        if kind is None or kind in self._episode_kinds:
            self._new_kind = (None, 0)
            return False
        candidate, count = self._new_kind
        self._new_kind = (kind, count + 1 if candidate == kind else 1)
        return self._new_kind[1] >= self.config.persistence

    def _alarm(self, window: WindowResult) -> Alarm:
        by_name = {r.detector.value: r for r in window.results}
        return Alarm(
            model=self.reference.model,
            version=self.reference.version,
            window=window.window,
            ts=window.end_ts,
            detectors=list(window.drifted),
            statistics={k: round(r.statistic, 6) for k, r in by_name.items()},
            p_values={k: float(r.p_value) for k, r in by_name.items()},
            cause=likely_cause(by_name, window.drifted),
            details={
                "adjusted_p": window.adjusted,
                "images": [window.start_index, window.end_index],
                "quality": by_name[Detector.QUALITY.value].details["statistics"]
                if Detector.QUALITY.value in by_name
                else None,
                "persistence": self.config.persistence,
                "alpha": self.config.alpha,
                "cause_kind": self._cause_kind(window),
            },
        )

    def _record(self, window: WindowResult) -> None:
        from visionline.monitor._alerts import fire

        if self.db is not None:
            self.db.add_windows(
                [
                    {
                        "ts": window.end_ts,
                        "model": self.reference.model,
                        "version": self.reference.version,
                        "window": window.window,
                        "start_ts": window.start_ts,
                        "end_ts": window.end_ts,
                        "n": window.end_index - window.start_index,
                        "detector": r.detector.value,
                        "statistic": float(r.statistic),
                        "p_value": float(r.p_value),
                        "adjusted_p": window.adjusted[r.detector.value],
                        "drifted": r.detector.value in window.drifted,
                    }
                    for r in window.results
                ]
            )
        if window.alarm is not None:
            if self.db is not None:
                row = window.alarm.to_dict()
                row.pop("id")
                window.alarm.id = self.db.add_alarm(row)
            fire(window.alarm, self.callbacks)
