"""Run a verified bundle: its ONNX model, its preprocessing and its operating threshold."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from visionline_edge._anomaly import ANOMALY_KIND, SCORE_OUTPUTS, anomaly_outputs
from visionline_edge._verify import release_unpacked, verify_bundle
from visionline_edge.errors import ConfigError, DataError, IntegrityError
from visionline_edge.preprocessing import Preprocessing, decode_image

__all__ = ["EdgeModel", "EdgePrediction", "ImagePrediction", "load_bundle"]


class ImagePrediction(NamedTuple):
    """One image's result."""

    probabilities: np.ndarray
    defect_score: float
    decision: str
    embedding: np.ndarray
    predicted_class: str
    anomaly_score: float | None = None
    anomaly_map: np.ndarray | None = None


@dataclass(frozen=True)
class EdgePrediction:
    """A batch of results; iterate for one `ImagePrediction` per image.

    An anomaly bundle also gives each image's raw anomaly score and its anomaly map (in the
    model's square input frame); its defect score is the normalised anomaly score.
    """

    probabilities: np.ndarray  # (N, C) float32
    defect_scores: np.ndarray  # (N,) = 1 - p(good)
    flagged: np.ndarray  # (N,) bool: defect_score > threshold
    decisions: list[str]  # 'good' or the defect label of the most likely defect class
    embeddings: np.ndarray  # (N, D) float32
    predicted_classes: list[str]
    anomaly_scores: np.ndarray | None = None  # (N,) raw detector scores
    anomaly_maps: np.ndarray | None = None  # (N, S, S) float32

    def __len__(self) -> int:
        return len(self.decisions)

    def __iter__(self) -> Iterator[ImagePrediction]:
        for i in range(len(self)):
            yield ImagePrediction(
                self.probabilities[i],
                float(self.defect_scores[i]),
                self.decisions[i],
                self.embeddings[i],
                self.predicted_classes[i],
                None if self.anomaly_scores is None else float(self.anomaly_scores[i]),
                None if self.anomaly_maps is None else self.anomaly_maps[i],
            )


def _model_bytes(manifest: dict[str, Any], file: str) -> bytes:
    """The model file's bytes, checked again against the verified manifest after reading, so a
    file swapped between verification and loading is never run."""
    entry = manifest["files"].get(file)
    if entry is None:
        raise IntegrityError(f"bundle.json does not list the model file {file}; do not deploy it.")
    data = (Path(manifest["_root"]) / file).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise IntegrityError(
            f"{file} changed after the bundle was verified (sha256 mismatch); do not deploy it."
        )
    return data


class EdgeModel:
    """A verified bundle's model with its preprocessing and operating threshold.

    `manifest` is what `verify_bundle` returned; build one with `load_bundle`.
    """

    def __init__(
        self, manifest: dict[str, Any], precision: str | None = None, threads: int | None = None
    ):
        import onnxruntime as ort

        self.manifest = manifest
        self.root = Path(manifest["_root"])
        self.signed_by: str | None = manifest.get("_signed_by")
        self.name: str = manifest["name"]
        self.version: str = manifest["version"]
        self.classes: list[str] = list(manifest["classes"])
        self.class_labels: dict[str, str] = dict(manifest["class_labels"])
        self.threshold: float = float(manifest["threshold"])
        self.preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        self.max_pixels: int = int(manifest.get("max_pixels", 40_000_000))
        self.kind: str = str(manifest.get("kind", "classifier"))
        self.anomaly_threshold: float | None = None
        if self.kind not in ("classifier", ANOMALY_KIND):
            raise ConfigError(
                f"Bundle {self.name} holds a {self.kind!r} model, which this runtime cannot run; "
                "upgrade visionline-edge."
            )
        if self.kind == ANOMALY_KIND:
            try:
                self.anomaly_threshold = float(manifest["anomaly"]["threshold"])
            except (KeyError, TypeError, ValueError) as exc:
                raise IntegrityError(
                    f"Anomaly bundle {self.name} names no anomaly threshold; export it again."
                ) from exc
        models = manifest["models"]
        self.precision = precision or manifest["deployed"]
        if self.precision not in models:
            raise ConfigError(
                f"Bundle {self.name} has no {self.precision} model; pick one of {', '.join(models)}."
            )
        file = models[self.precision]["file"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                _model_bytes(manifest, file), options, providers=["CPUExecutionProvider"]
            )
        except IntegrityError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for a broken graph
            raise IntegrityError(
                f"ONNX Runtime cannot load {file} of bundle {self.name} "
                f"({type(exc).__name__}: {exc}); export the bundle again."
            ) from exc

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every named output for a preprocessed NCHW float32 batch: `probabilities` and
        `embedding`, and for an anomaly bundle also `score`, `decision` and `anomaly_map`."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.kind != ANOMALY_KIND:
            names = ["probabilities", "embedding"]
            return dict(zip(names, self.session.run(names, {"image": batch})))
        raw = dict(zip(SCORE_OUTPUTS, self.session.run(list(SCORE_OUTPUTS), {"image": batch})))
        return anomaly_outputs(raw, self.anomaly_threshold)  # type: ignore[arg-type]

    def predict_array(self, batch: np.ndarray) -> EdgePrediction:
        """Predict a preprocessed NCHW float32 batch."""
        out = self.outputs(batch)
        probabilities, embeddings = out["probabilities"], out["embedding"]
        if self.kind == ANOMALY_KIND:  # decide on the raw score, exactly as the graph does
            scores, flagged = probabilities[:, 1], out["score"] > self.anomaly_threshold
        else:
            scores = 1.0 - probabilities[:, 0]
            flagged = scores > self.threshold
        defect_best = 1 + np.argmax(probabilities[:, 1:], axis=1)
        decisions = [
            self.class_labels[self.classes[int(j)]] if flag else "good"
            for flag, j in zip(flagged, defect_best)
        ]
        predicted = [self.classes[int(j)] for j in np.argmax(probabilities, axis=1)]
        maps = out.get("anomaly_map")
        return EdgePrediction(
            probabilities,
            scores,
            flagged,
            decisions,
            embeddings,
            predicted,
            out.get("score"),
            None if maps is None else maps[:, 0],
        )

    def predict(self, images: Sequence[bytes | Image.Image]) -> EdgePrediction:
        """Predict a batch of encoded images (bytes) or decoded PIL images."""
        if not images:
            raise DataError("predict needs at least one image; pass a non-empty list.")
        decoded = [
            decode_image(item, self.max_pixels) if isinstance(item, (bytes, bytearray)) else item
            for item in images
        ]
        return self.predict_array(self.preprocessing(decoded))


def load_bundle(
    path: str | os.PathLike[str],
    pubkey: str | os.PathLike[str] | bytes | None = None,
    precision: str | None = None,
    threads: int | None = None,
    *,
    trust_store: str | os.PathLike[str] | None = None,
    require_signature: bool = False,
) -> EdgeModel:
    """Verify a bundle (see `verify_bundle`) and load its model.

    The model runs from memory, so the temporary copy a .tar.gz was unpacked into is removed
    once it is loaded (or fails to load), and `manifest["_unpacked"]` becomes None.
    """
    manifest = verify_bundle(
        path, pubkey, trust_store=trust_store, require_signature=require_signature
    )
    try:
        return EdgeModel(manifest, precision=precision, threads=threads)
    finally:
        release_unpacked(manifest)
