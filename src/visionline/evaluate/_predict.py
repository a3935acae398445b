"""The model-running half of evaluation: dataset records → blobs → decode → preprocess → model.

Everything after this works on the arrays it returns, so metrics never touch a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from visionline.errors import DataError
from visionline.evaluate._operating import softmax
from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from visionline.data import BlobStore, ImageRecord
    from visionline.train import InspectionModel, ModelSpec


@dataclass
class Predictions:
    """Per-image model outputs, row-aligned with `records`."""

    records: list[ImageRecord]
    logits: np.ndarray  # (N, C)
    embeddings: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,) class index of each record's true class
    class_names: list[str]

    def probabilities(self, temperature: float = 1.0) -> np.ndarray:
        return softmax(self.logits, temperature)

    def defect_scores(self, temperature: float = 1.0) -> np.ndarray:
        return 1.0 - self.probabilities(temperature)[:, 0]


def record_class(record: ImageRecord) -> str:
    """The model class name of a manifest record: its subtype, else its label."""
    return record.subtype or record.label


def label_indices(records: Sequence[ImageRecord], class_names: list[str]) -> np.ndarray:
    """True class index per record; a class the model does not know is a clear error."""
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for record in records:
        name = record_class(record)
        if name not in index:
            raise DataError(
                f"Image {record.path} has class {name!r}, which the model does not predict "
                f"(classes: {', '.join(class_names)}); evaluate on data with the model's classes."
            )
        labels.append(index[name])
    return np.asarray(labels, dtype=np.int64)


_REMEMBERED: OrderedDict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = OrderedDict()
REMEMBERED_MODELS = 4
"""How many models' outputs `predict_records` keeps per process (least recently used go)."""


def _model_digest(model: InspectionModel, spec: ModelSpec) -> str:
    """Content hash of what the outputs depend on: the spec and every weight and buffer."""
    import hashlib
    import json

    import torch

    digest = hashlib.blake2b(json.dumps(spec.to_dict(), sort_keys=True).encode(), digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def predict_records(
    model: InspectionModel,
    spec: ModelSpec,
    records: Sequence[ImageRecord],
    blobs: BlobStore,
    batch_size: int = 64,
    progress: bool = False,
) -> Predictions:
    """Run the model over dataset records in batches; returns logits and pooled embeddings.

    Outputs are remembered per model content and image (sha256) for the rest of the process:
    a pipeline run evaluates a model, `promote` evaluates it again on the same test images, and
    retraining judges the champion once more, each of which would otherwise rerun the model.
    """
    records = list(records)
    if not records:
        raise DataError("No images to evaluate; pick a split that has images.")
    labels = label_indices(records, spec.class_names)
    key = _model_digest(model, spec)
    known = _REMEMBERED.pop(key, {})
    _REMEMBERED[key] = known
    while len(_REMEMBERED) > REMEMBERED_MODELS:
        _REMEMBERED.popitem(last=False)
    missing = list({r.sha256: r for r in records if r.sha256 not in known}.values())
    if missing:
        logits, embeddings = _run_model(model, spec, missing, blobs, batch_size, progress)
        known.update(
            (record.sha256, (row, vector)) for record, row, vector in zip(missing, logits, embeddings)
        )
    return Predictions(
        records=records,
        logits=np.stack([known[r.sha256][0] for r in records]).astype(np.float64),
        embeddings=np.stack([known[r.sha256][1] for r in records]),
        labels=labels,
        class_names=list(spec.class_names),
    )


def _run_model(
    model: InspectionModel,
    spec: ModelSpec,
    records: list[ImageRecord],
    blobs: BlobStore,
    batch_size: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from rich.progress import Progress

    logits, embeddings = [], []
    model.eval()
    from rich.console import Console

    bar_console = Console(stderr=True)
    with Progress(
        console=bar_console, transient=True, disable=not (progress and bar_console.is_terminal)
    ) as bar:
        task = bar.add_task("Predicting", total=len(records))
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            images = [decode_image(blobs.get(record.sha256)) for record in batch]
            inputs = torch.from_numpy(spec.preprocessing(images))
            with torch.inference_mode():
                embedding, batch_logits = model.predict(inputs)
                logits.append(batch_logits.numpy())
                embeddings.append(embedding.numpy())
            bar.advance(task, len(batch))
    return np.concatenate(logits), np.concatenate(embeddings)
