"""Send production images back to people: the most uncertain or drifted as Label Studio tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import ConfigError, DataError
from visionline.monitor._adapter import Reference, decode_embeddings
from visionline.monitor._db import MonitorDB


def select_for_labelling(
    db: MonitorDB, n: int, reference: Reference | None = None
) -> list[dict[str, Any]]:
    """Predictions with a stored image: half closest to the threshold, half farthest from the
    reference embeddings (when a reference is given), without repeats."""
    frame = db.frame(
        columns=[
            "id",
            "model",
            "version",
            "probabilities",
            "defect_score",
            "threshold",
            "predicted_class",
            "image_sha256",
            "embedding",
        ],
    )
    frame = (
        frame[frame["image_sha256"].notna()].drop_duplicates("image_sha256").reset_index(drop=True)
    )
    if frame.empty:
        raise DataError(
            "No logged prediction has a stored image; run the logger with a blob store "
            "(images are sampled, flagged and uncertain ones always kept)."
        )
    margin = np.abs(frame["defect_score"].to_numpy() - frame["threshold"].to_numpy())
    order_uncertain = list(np.argsort(margin, kind="stable"))
    order_drifted: list[int] = []
    if reference is not None and frame["embedding"].notna().all():
        emb = decode_embeddings(list(frame["embedding"]))
        ref = reference.embeddings
        if emb.shape[1] == ref.shape[1]:
            nearest = np.min(
                np.sum(emb**2, 1)[:, None] + np.sum(ref**2, 1)[None, :] - 2 * emb @ ref.T, axis=1
            )
            order_drifted = list(np.argsort(-nearest, kind="stable"))
    chosen: list[int] = []
    reasons: dict[int, str] = {}
    queues = [(order_uncertain, "uncertain"), (order_drifted, "drifted")]
    while len(chosen) < min(n, len(frame)):
        progressed = False
        for order, reason in queues:
            while order:
                i = int(order.pop(0))
                if i not in reasons:
                    chosen.append(i)
                    reasons[i] = reason
                    progressed = True
                    break
            if len(chosen) >= n:
                break
        if not progressed:
            break
    rows = frame.iloc[chosen].to_dict("records")
    for row, i in zip(rows, chosen):
        row["reason"] = reasons[i]
        row.pop("embedding", None)
    return rows


def export_tasks(
    db: MonitorDB,
    blobs: Any,
    out: Path,
    n: int = 100,
    reference: Reference | None = None,
    document_root: Path | None = None,
) -> list[dict[str, Any]]:
    """Write Label Studio import tasks with the model's pre-annotation; returns the tasks."""
    import json

    from visionline.data._labelstudio import (
        TO_NAME,
        ModelPrediction,
        _prediction_payload,
        local_files_url,
    )

    if n <= 0:
        raise ConfigError("--n must be at least 1; ask for the number of tasks you want.")
    tasks = []
    for row in select_for_labelling(db, n, reference):
        path = blobs.local_path(row["image_sha256"])
        if path is None:
            raise ConfigError(
                "The blob store is not on this filesystem, so Label Studio cannot serve its "
                "images as local files; export from a project with a local blob store."
            )
        probabilities = row["probabilities"]
        choice = max(probabilities, key=probabilities.get)
        model_version = f"{row['model']}:{row['version']}"
        tasks.append(
            {
                "data": {
                    TO_NAME: local_files_url(path, document_root)
                    if document_root
                    else str(path.resolve()),
                    "sha256": row["image_sha256"],
                    "prediction_id": row["id"],
                    "reason": row["reason"],
                    "defect_score": round(float(row["defect_score"]), 6),
                },
                "predictions": [
                    _prediction_payload(
                        ModelPrediction(choice, float(probabilities[choice]), model_version),
                        model_version,
                    )
                ],
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=2))
    return tasks
