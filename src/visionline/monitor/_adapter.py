"""The one place that knows the shapes of the export and serve stages.

Everything else in `visionline.monitor` works on `LoggedPrediction` and `Reference`. The server's
hook hands over `visionline.serve.PredictionRecord`s whose `extra` may carry `embedding`,
`image` (encoded bytes), `quality`, `latency_ms` and the request `parameters` (`delivery_id`,
`supplier_id`, `line`, `camera`); the edge runtime hands over an `EdgePrediction`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import DataError, NotFoundError
from visionline_edge import QUALITY_STATS, image_quality

__all__ = [
    "QUALITY_STATS",
    "LoggedPrediction",
    "Reference",
    "from_edge_prediction",
    "from_serve_records",
    "image_quality",
    "validated_rates",
]

PARAMETER_KEYS = ("delivery_id", "supplier_id", "line", "camera")


@dataclass
class LoggedPrediction:
    """One logged model answer; `image` is only kept when the logger samples it."""

    model: str
    version: str
    probabilities: dict[str, float]
    defect_score: float
    flagged: bool
    decision: str
    predicted_class: str
    threshold: float
    ts: float
    route: str = "primary"
    request_id: str | None = None
    latency_ms: float | None = None
    delivery_id: str | None = None
    supplier_id: str | None = None
    line: str | None = None
    camera: str | None = None
    quality: Sequence[float] | None = None
    embedding: np.ndarray | None = None
    image: bytes | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def row(self, image_sha256: str | None) -> dict[str, Any]:
        """The database row (embedding as compact float16 bytes)."""
        quality = list(self.quality) if self.quality is not None else [None] * len(QUALITY_STATS)
        embedding = (
            np.asarray(self.embedding, dtype=np.float16).tobytes()
            if self.embedding is not None
            else None
        )
        return {
            "id": self.id,
            "ts": float(self.ts),
            "model": self.model,
            "version": self.version,
            "route": self.route,
            "request_id": self.request_id,
            "line": self.line,
            "camera": self.camera,
            "delivery_id": self.delivery_id,
            "supplier_id": self.supplier_id,
            "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
            "predicted_class": self.predicted_class,
            "defect_score": float(self.defect_score),
            "flagged": bool(self.flagged),
            "decision": self.decision,
            "threshold": float(self.threshold),
            "latency_ms": None if self.latency_ms is None else float(self.latency_ms),
            **{
                name: None if value is None else float(value)
                for name, value in zip(QUALITY_STATS, quality)
            },
            "embedding": embedding,
            "image_sha256": image_sha256,
        }


def decode_embeddings(blobs: Sequence[bytes | None]) -> np.ndarray:
    """(N, D) float32 from the stored float16 bytes (rows without an embedding are dropped)."""
    rows = [np.frombuffer(b, dtype=np.float16) for b in blobs if b]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


def _get(record: Any, name: str, default: Any = None) -> Any:
    return getattr(record, name, default)


def from_serve_records(records: Sequence[Any]) -> list[LoggedPrediction]:
    """Convert the server hook's `PredictionRecord`s (or pass `LoggedPrediction`s through)."""
    out = []
    for record in records:
        if isinstance(record, LoggedPrediction):
            out.append(record)
            continue
        extra = dict(_get(record, "extra") or {})
        params = {**dict(extra.get("parameters") or {}), **extra}
        probabilities = dict(record.probabilities)
        embedding = extra.get("embedding")
        out.append(
            LoggedPrediction(
                model=str(record.model),
                version=str(record.version),
                probabilities=probabilities,
                defect_score=float(record.defect_score),
                flagged=bool(record.is_defect),
                decision=_decision(record.label, bool(record.is_defect), probabilities),
                predicted_class=str(record.label),
                threshold=float(record.threshold),
                ts=float(record.timestamp),
                route=str(_get(record, "route", "primary")),
                request_id=_get(record, "request_id"),
                latency_ms=extra.get("latency_ms"),
                quality=extra.get("quality"),
                embedding=None if embedding is None else np.asarray(embedding, np.float32),
                image=extra.get("image"),
                **{k: _parameter(params, k) for k in PARAMETER_KEYS},
            )
        )
    return out


def _parameter(params: dict[str, Any], key: str) -> str | None:
    """A request id such as `delivery_id`, also accepted without its `_id` suffix (`delivery`)."""
    value = params.get(key, params.get(key.removesuffix("_id")))
    return None if value is None else str(value)


def _decision(label: str, flagged: bool, probabilities: dict[str, float]) -> str:
    """'good' unless flagged; a flagged image is named by its most likely defect class."""
    if not flagged:
        return "good"
    defects = {k: v for k, v in probabilities.items() if k != "good"}
    return max(defects, key=defects.get) if defects else label


def from_edge_prediction(
    prediction: Any,
    *,
    model: str,
    version: str,
    threshold: float,
    classes: Sequence[str],
    ts: Sequence[float] | float,
    quality: np.ndarray | None = None,
    images: Sequence[bytes | None] | None = None,
    latency_ms: float | None = None,
    **parameters: Any,
) -> list[LoggedPrediction]:
    """Rows from an `EdgePrediction` batch; `parameters` are per-request ids (or per-image lists)."""
    n = len(prediction.defect_scores)
    times = np.broadcast_to(np.asarray(ts, dtype=np.float64), (n,))

    def pick(value: Any, i: int) -> Any:
        return value[i] if isinstance(value, (list, tuple, np.ndarray)) else value

    out = []
    for i in range(n):
        probs = {c: float(p) for c, p in zip(classes, prediction.probabilities[i])}
        flagged = bool(prediction.flagged[i])
        out.append(
            LoggedPrediction(
                model=model,
                version=version,
                probabilities=probs,
                defect_score=float(prediction.defect_scores[i]),
                flagged=flagged,
                decision=prediction.decisions[i] if flagged else "good",
                predicted_class=prediction.predicted_classes[i],
                threshold=threshold,
                ts=float(times[i]),
                latency_ms=latency_ms,
                quality=None if quality is None else quality[i].tolist(),
                embedding=prediction.embeddings[i],
                image=None if images is None else images[i],
                **{k: pick(parameters.get(k), i) for k in PARAMETER_KEYS},
            )
        )
    return out


@dataclass(frozen=True)
class Reference:
    """What the validation set looked like to the deployed model: the baseline for drift tests."""

    model: str
    version: str
    classes: tuple[str, ...]
    threshold: float
    scores: np.ndarray  # (N,)
    probabilities: np.ndarray  # (N, C)
    embeddings: np.ndarray  # (M, D) sample
    quality: np.ndarray  # (N, 4)
    components: np.ndarray | None = None  # (K, D) top principal directions of the embeddings
    embedding_mean: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def class_shares(self) -> np.ndarray:
        predicted = np.argmax(self.probabilities, axis=1)
        return np.bincount(predicted, minlength=len(self.classes)) / max(len(predicted), 1)

    @classmethod
    def from_bundle(cls, path: str | Path) -> Reference:
        """Read the reference statistics that `visionline export` wrote into a bundle.

        Inside a model repository (`REPO/<name>/<version>/`) the version is the folder's name,
        because that is the version the server serves and logs.
        """
        root = Path(path)
        manifest_path = root / "bundle.json" if root.is_dir() else root
        if not manifest_path.is_file():
            raise NotFoundError(
                f"No bundle.json at {root}; pass a bundle directory made by 'visionline export'."
            )
        manifest = json.loads(manifest_path.read_text())
        reference = manifest.get("reference")
        if not reference:
            raise DataError(
                f"Bundle {manifest_path.parent} has no reference statistics; export it again "
                "with --data so drift can be measured."
            )
        base = manifest_path.parent
        files = reference["files"]
        stats = np.load(base / files["embedding_stats"])
        deployed = manifest.get("deployed", "fp32")
        in_repository = root.is_dir() and root.parent.name == manifest["name"]
        return cls(
            model=manifest["name"],
            version=root.name if in_repository else str(manifest["version"]),
            classes=tuple(manifest["classes"]),
            threshold=float(manifest["threshold"]),
            scores=np.load(base / files["scores"]).astype(np.float64),
            probabilities=np.load(base / files["probabilities"]).astype(np.float32),
            embeddings=np.load(base / files["embeddings"]).astype(np.float32),
            quality=np.load(base / files["quality"]).astype(np.float64),
            components=stats["components"],
            embedding_mean=stats["mean"],
            metrics=dict(manifest.get("metrics", {}).get(deployed, {})),
        )

    @classmethod
    def from_arrays(
        cls,
        probabilities: np.ndarray,
        embeddings: np.ndarray,
        quality: np.ndarray,
        *,
        classes: Sequence[str],
        threshold: float,
        model: str = "model",
        version: str = "1",
        metrics: dict[str, Any] | None = None,
        sample: int = 256,
        seed: int = 0,
    ) -> Reference:
        """A reference from validation outputs, computed the way `visionline export` does."""
        probabilities = np.asarray(probabilities, dtype=np.float32)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        rows = np.random.default_rng(seed).choice(
            len(embeddings), size=min(sample, len(embeddings)), replace=False
        )
        mean = embeddings.mean(axis=0)
        _, _, components = np.linalg.svd(embeddings - mean, full_matrices=False)
        return cls(
            model=model,
            version=version,
            classes=tuple(classes),
            threshold=float(threshold),
            scores=1.0 - probabilities[:, 0].astype(np.float64),
            probabilities=probabilities,
            embeddings=embeddings[np.sort(rows)],
            quality=np.asarray(quality, dtype=np.float64),
            components=components[:32],
            embedding_mean=mean,
            metrics=dict(metrics or {}),
        )


def validated_rates(reference: Reference) -> Any:
    """`ValidatedRates` from the bundle's validation metrics (recall and FRR at its threshold)."""
    from visionline.evaluate import ValidatedRates

    m = reference.metrics
    try:
        n_defect, n_good = int(m["n_defect"]), int(m["n_good"])
        return ValidatedRates(
            tp=round(float(m["defect_recall"]) * n_defect),
            n_defect=n_defect,
            fp=round(float(m["false_reject_rate"]) * n_good),
            n_good=n_good,
            threshold=reference.threshold,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"Bundle {reference.model} v{reference.version} has no validated recall/false-reject "
            "counts; export it again with --data, or pass --rates metrics.json."
        ) from exc
