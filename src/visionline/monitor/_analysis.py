"""What the log says: feedback, realised and estimated performance, defect rates per delivery.

Realised rates need people's verdicts (`record_feedback`, `import_feedback`). The label-free
estimate (`estimate_performance`, confidence-based like NannyML's CBPE) needs none, but it is only
as good as the calibration of the probabilities: valid under covariate shift (the inputs change,
p(label | image) does not), blind to concept drift (the same image now deserves another label).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.config import GOOD_CLASS, ProjectConfig
from visionline.errors import DataError
from visionline.monitor._adapter import Reference, decode_embeddings
from visionline.monitor._db import MonitorDB

if TYPE_CHECKING:
    import pandas as pd

    from visionline.monitor._drift import DriftConfig, WindowResult

CBPE_ASSUMPTIONS = (
    "Expected rates assume calibrated probabilities (calibrated on held-out data, not the training "
    "set) and covariate shift only: they stay valid when the images change but not when the "
    "meaning of a label changes (concept drift)."
)


def parse_verdict(verdict: str, config: ProjectConfig) -> tuple[str, str | None]:
    """'good', 'defect', 'defect/bruise' or a bare subtype 'bruise' → (label, subtype)."""
    text = verdict.strip().lower()
    labels = config.defect_labels()
    if text == GOOD_CLASS:
        return GOOD_CLASS, None
    label, _, subtype = text.partition("/")
    if label in labels and (not subtype or subtype in labels[label]):
        return label, subtype or None
    for defect, subtypes in labels.items():
        if not subtype and label in subtypes:
            return defect, label
    choices = ["good", *labels, *(f"{d}/{s}" for d, subs in labels.items() for s in subs)]
    raise DataError(f"Verdict {verdict!r} is not one of {', '.join(choices)}; pick one of those.")


def record_feedback(
    db: MonitorDB, prediction_id: str, verdict: str, config: ProjectConfig, source: str = "cli"
) -> tuple[str, str, str | None]:
    """Store a person's verdict on a logged prediction; returns (full id, label, subtype)."""
    label, subtype = parse_verdict(verdict, config)
    full = db.resolve_prediction(prediction_id)
    db.add_feedback(full, label, subtype, source)
    return full, label, subtype


@dataclass(frozen=True)
class FeedbackImport:
    """What a Label Studio export added."""

    decisions: int
    matched: int
    unmatched: int
    issues: list[str]


def import_feedback(db: MonitorDB, export: Path, config: ProjectConfig) -> FeedbackImport:
    """Verdicts from a Label Studio export of tasks made by `export_tasks` (matched by image sha256)."""
    from visionline.data._labelstudio import parse_export

    decisions, issues = parse_export(export, config)
    ids = db.prediction_ids_for_images(d.sha256 for d in decisions if d.sha256)
    matched = unmatched = 0
    for decision in decisions:
        targets = ids.get(decision.sha256 or "", [])
        if not targets:
            unmatched += 1
            continue
        for pid in targets:
            db.add_feedback(pid, decision.label, decision.subtype, "labelstudio")
        matched += 1
    return FeedbackImport(len(decisions), matched, unmatched, issues)


def _rate(k: int, n: int) -> dict[str, Any]:
    from visionline.evaluate import clopper_pearson

    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "low": None, "high": None}
    low, high = clopper_pearson(k, n)
    return {"k": k, "n": n, "rate": k / n, "low": float(low), "high": float(high)}


def realised_performance(db: MonitorDB, period: str = "day") -> list[dict[str, Any]]:
    """Realised false-reject and escape rates (with 95% intervals) per model version and period."""
    import pandas as pd

    frame = db.feedback_frame()
    if frame.empty:
        return []
    stamp = pd.to_datetime(frame["ts"], unit="s", utc=True)
    frame["period"] = (
        stamp.dt.strftime("%Y-%m-%d") if period == "day" else stamp.dt.strftime("%G-W%V")
    )
    rows = []
    for (model, version, when), part in frame.groupby(["model", "version", "period"], sort=True):
        good = part["label"] == GOOD_CLASS
        flagged = part["flagged"].astype(bool)
        rows.append(
            {
                "model": model,
                "version": version,
                "period": when,
                "verdicts": len(part),
                "false_reject": _rate(int((good & flagged).sum()), int(good.sum())),
                "escape": _rate(int((~good & ~flagged).sum()), int((~good).sum())),
            }
        )
    return rows


@dataclass(frozen=True)
class PerformanceEstimate:
    """Confidence-based expected rates over a set of predictions (no labels needed)."""

    n: int
    flag_rate: float
    expected_defect_rate: float
    expected_accuracy: float
    expected_false_reject_rate: float
    expected_escape_rate: float
    assumptions: str = CBPE_ASSUMPTIONS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_performance(p_good: np.ndarray, flagged: np.ndarray) -> PerformanceEstimate:
    """CBPE: expected confusion counts from calibrated p(good) and the decisions taken."""
    p_good = np.clip(np.asarray(p_good, dtype=np.float64), 0.0, 1.0)
    flagged = np.asarray(flagged, dtype=bool)
    if len(p_good) == 0:
        raise DataError("No predictions to estimate from; log some predictions first.")
    p_defect = 1.0 - p_good
    expected_correct = np.where(flagged, p_defect, p_good)
    good_mass, defect_mass = p_good.sum(), p_defect.sum()
    return PerformanceEstimate(
        n=len(p_good),
        flag_rate=float(flagged.mean()),
        expected_defect_rate=float(p_defect.mean()),
        expected_accuracy=float(expected_correct.mean()),
        expected_false_reject_rate=float((p_good * flagged).sum() / good_mass)
        if good_mass
        else 0.0,
        expected_escape_rate=float((p_defect * ~flagged).sum() / defect_mass)
        if defect_mass
        else 0.0,
    )


def estimate_from_log(frame: pd.DataFrame) -> dict[tuple[str, str], PerformanceEstimate]:
    """CBPE per model version from a prediction frame with `probabilities` and `flagged`."""
    out = {}
    for (model, version), part in frame.groupby(["model", "version"], sort=True):
        answered = np.array([bool(p) for p in part["probabilities"]])
        if answered.any():  # an edge fail-safe verdict (no model answer) says nothing of quality
            part = part[answered]
        p_good = np.array([float(p.get(GOOD_CLASS, 0.0)) for p in part["probabilities"]])
        out[(str(model), str(version))] = estimate_performance(
            p_good, part["flagged"].to_numpy(bool)
        )
    return out


def estimate_deliveries(
    db: MonitorDB, by: str = "delivery_id", rates: Any | None = None, confidence: float = 0.90
) -> list[dict[str, Any]]:
    """Corrected defect rate with an interval per delivery (or supplier) from the log."""
    from visionline.evaluate import estimate_by_group

    frame = db.frame(columns=["ts", "delivery_id", "supplier_id", "flagged", "probabilities"])
    frame = frame[frame[by].notna()]
    if frame.empty:
        raise DataError(
            f"No logged prediction has a {by}; send it as a request parameter "
            f"('parameters': {{'{by}': ...}}) when calling the server."
        )
    frame["predicted_subtype"] = [
        max(((k, v) for k, v in p.items() if k != GOOD_CLASS), key=lambda kv: kv[1])[0]
        if len(p) > 1
        else None
        for p in frame["probabilities"]
    ]
    rows = estimate_by_group(
        frame.drop(columns=["probabilities"]), by, rates, confidence=confidence
    )
    first = frame.groupby(by)["ts"].min()
    suppliers = frame.groupby(by)["supplier_id"].first() if by != "supplier_id" else None
    for row in rows:
        row["first_ts"] = float(first[row[by]])
        if suppliers is not None:
            row["supplier_id"] = suppliers[row[by]]
    return rows


def _last_cause_kind(db: MonitorDB, reference: Reference) -> str | None:
    alarms = db.alarms_frame(reference.model)
    alarms = alarms[alarms["version"] == reference.version] if not alarms.empty else alarms
    if alarms.empty:
        return None
    return (alarms["details"].iloc[-1] or {}).get("cause_kind")


def check_drift(
    db: MonitorDB,
    reference: Reference,
    config: DriftConfig | None = None,
    callbacks: Any = (),
) -> list[WindowResult]:
    """Run the drift monitor over predictions of the reference model logged since its last window."""
    from visionline.monitor._drift import DriftMonitor

    done = db.windows_frame(reference.model)
    done = done[done["version"] == reference.version] if not done.empty else done
    since = float(done["end_ts"].max()) if not done.empty else None
    frame = db.frame(model=reference.model, since=since)
    frame = frame[frame["version"] == reference.version]
    if since is not None:
        frame = frame[frame["ts"] > since]
    monitor = DriftMonitor(reference, config, db=db, on_alarm=callbacks)
    if not done.empty:
        streak = 0
        for drifted in reversed(done.groupby("window")["drifted"].any().sort_index().tolist()):
            if not drifted:
                break
            streak += 1
        monitor.resume(int(done["window"].max()) + 1, streak, _last_cause_kind(db, reference))
    if frame.empty:
        return []
    probs = np.array(
        [[float(p.get(c, 0.0)) for c in reference.classes] for p in frame["probabilities"]]
    )
    has_emb = frame["embedding"].notna().all()
    embeddings = decode_embeddings(list(frame["embedding"])) if has_emb else None
    quality_cols = ["brightness", "contrast", "sharpness", "colourfulness"]
    quality = (
        frame[quality_cols].to_numpy(np.float64)
        if frame[quality_cols].notna().all().all()
        else None
    )
    return monitor.update(probs, embeddings, quality, frame["ts"].to_numpy(np.float64))
