"""Reference statistics for drift detection, computed on the validation set by the deployed model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from visionline_edge import QUALITY_STATS

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
EMBEDDING_SAMPLE = 256
PCA_COMPONENTS = 32


def _summary(
    values: np.ndarray, bins: int = 20, value_range: tuple[float, float] | None = None
) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES},
        "histogram": {"edges": edges.round(6).tolist(), "counts": counts.tolist()},
    }


def reference_statistics(
    out_dir: Path,
    scores: np.ndarray,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    quality: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """Write reference arrays under `out_dir` (relative names returned) and summarise them.

    Arrays: defect scores and softmax outputs (for KS / black-box shift detection), a float16
    embedding sample, the embedding mean, per-dimension variance and top principal components,
    and per-image quality values.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(embeddings), size=min(EMBEDDING_SAMPLE, len(embeddings)), replace=False)
    sample = embeddings[np.sort(rows)].astype(np.float16)
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    k = min(PCA_COMPONENTS, len(singular))
    eigenvalues = singular[:k] ** 2 / max(len(embeddings) - 1, 1)
    np.save(out_dir / "scores.npy", scores.astype(np.float32))
    np.save(out_dir / "probabilities.npy", probabilities.astype(np.float16))
    np.save(out_dir / "embeddings.npy", sample)
    np.save(out_dir / "quality.npy", quality.astype(np.float32))
    np.savez(
        out_dir / "embedding_stats.npz",
        mean=mean.astype(np.float32),
        variance=embeddings.var(axis=0).astype(np.float32),
        components=components[:k].astype(np.float32),
        eigenvalues=eigenvalues.astype(np.float32),
    )
    prefix = out_dir.name
    total_variance = float(embeddings.var(axis=0, ddof=1).sum()) if len(embeddings) > 1 else 0.0
    return {
        "images": len(scores),
        "defect_score": _summary(scores, value_range=(0.0, 1.0)),
        "image_quality": {name: _summary(quality[:, i]) for i, name in enumerate(QUALITY_STATS)},
        "embedding": {
            "dim": int(embeddings.shape[1]),
            "sample_rows": len(sample),
            "mean_norm": float(np.linalg.norm(mean)),
            "total_variance": total_variance,
            "pca_explained": float(eigenvalues.sum() / total_variance) if total_variance else 0.0,
        },
        "files": {
            "scores": f"{prefix}/scores.npy",
            "probabilities": f"{prefix}/probabilities.npy",
            "embeddings": f"{prefix}/embeddings.npy",
            "embedding_stats": f"{prefix}/embedding_stats.npz",
            "quality": f"{prefix}/quality.npy",
        },
    }
