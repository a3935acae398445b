"""The edge runtime: load a verified bundle and predict. Needs only onnxruntime, numpy and Pillow.

This module (with `visionline.preprocessing` and `visionline.errors`) is copied into every bundle
under `runtime/`, so an edge box runs exactly the preprocessing the model was exported with.
Signatures are checked with `cryptography` when it is installed and with a pure-Python Ed25519
verifier (RFC 8032) otherwise, so verification never depends on what the box has.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from visionline.errors import ConfigError, DataError, IntegrityError, NotFoundError
from visionline.preprocessing import Preprocessing, decode_image

__all__ = [
    "MANIFEST",
    "QUALITY_STATS",
    "SIGNATURE",
    "EdgeModel",
    "EdgePrediction",
    "ImagePrediction",
    "image_quality",
    "key_id",
    "load_bundle",
    "read_public_key",
    "verify_bundle",
]

MANIFEST = "bundle.json"
SIGNATURE = "bundle.sig"
QUALITY_STATS = ("brightness", "contrast", "sharpness", "colourfulness")
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

# --- Ed25519 verification (RFC 8032, section 6), used when `cryptography` is absent -------------
_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 % _P == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _decompress(data: bytes) -> tuple[int, int, int, int] | None:
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int]:
    pa = (a[1] - a[0]) * (b[1] - b[0]) % _P
    pb = (a[1] + a[0]) * (b[1] + b[0]) % _P
    pc = 2 * a[3] * b[3] * _D % _P
    pd = 2 * a[2] * b[2] % _P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(scalar: int, point: tuple[int, ...]) -> tuple[int, ...]:
    result: tuple[int, ...] = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0) or 0
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _ed25519_verify_pure(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(public) != 32 or len(signature) != 64:
        return False
    point_a, point_r = _decompress(public), _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if point_a is None or point_r is None or s >= _Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _Q
    left, right = _mul(s, _G), _add(point_r, _mul(h, point_a))
    return (left[0] * right[2] - right[0] * left[2]) % _P == 0 and (
        left[1] * right[2] - right[1] * left[2]
    ) % _P == 0


def _ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return _ed25519_verify_pure(public, message, signature)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def read_public_key(key: str | os.PathLike[str] | bytes) -> bytes:
    """The raw 32-byte Ed25519 key from a PEM file path, PEM bytes or raw bytes."""
    if isinstance(key, (str, os.PathLike)):
        path = Path(key)
        if not path.is_file():
            raise NotFoundError(
                f"No public key at {path}; pass the .pub file from 'visionline keys generate'."
            )
        key = path.read_bytes()
    if len(key) == 32:
        return bytes(key)
    text = key.decode("ascii", errors="replace")
    if "-----BEGIN PUBLIC KEY-----" not in text:
        raise ConfigError(
            "The public key is not a PEM Ed25519 public key; pass the .pub file from 'visionline keys generate'."
        )
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    der = base64.b64decode(body)
    if len(der) != 44 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise ConfigError(
            "The public key is not an Ed25519 key; pass the .pub file from 'visionline keys generate'."
        )
    return der[len(_ED25519_SPKI_PREFIX) :]


def key_id(public: bytes) -> str:
    """A short fingerprint that names the key a bundle was signed with."""
    return hashlib.sha256(public).hexdigest()[:16]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_bundle(path: Path) -> Path:
    """A bundle directory; a .tar.gz is unpacked into a private temporary directory first."""
    if path.is_dir():
        return path
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        target = Path(tempfile.mkdtemp(prefix="visionline-bundle-"))
        try:
            with tarfile.open(path, "r:gz") as archive:
                archive.extractall(target, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise IntegrityError(
                f"{path} is not a readable bundle archive ({exc}); export it again."
            ) from exc
        entries = [p for p in target.iterdir()]
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else target
    raise NotFoundError(f"No bundle at {path}; pass a bundle directory or its .tar.gz.")


def verify_bundle(
    path: str | os.PathLike[str], pubkey: str | os.PathLike[str] | bytes | None = None
) -> dict[str, Any]:
    """Check every file's sha256 (and the Ed25519 signature when `pubkey` is given); return the manifest.

    Raises `IntegrityError` for a changed, missing or extra file, a changed manifest, a missing
    signature, or a signature by another key.
    """
    root = _open_bundle(Path(path))
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise NotFoundError(
            f"{root} has no {MANIFEST}; pass a directory made by 'visionline export'."
        )
    manifest_bytes = manifest_path.read_bytes()
    if pubkey is not None:
        public = read_public_key(pubkey)
        signature_path = root / SIGNATURE
        if not signature_path.is_file():
            raise IntegrityError(f"{root} is not signed; export it again with --sign KEY.")
        try:
            signature = base64.b64decode(json.loads(signature_path.read_text())["signature"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"{signature_path} is unreadable; export the bundle again with --sign KEY."
            ) from exc
        if not _ed25519_verify(public, manifest_bytes, signature):
            raise IntegrityError(
                f"The signature of {root} does not match key {key_id(public)}: the manifest was changed "
                "or signed with another key; do not deploy it, re-export and sign it."
            )
    try:
        manifest = json.loads(manifest_bytes)
        listed: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{manifest_path} is not a valid bundle manifest; export the bundle again."
        ) from exc
    for name, entry in listed.items():
        file_path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise IntegrityError(
                f"{MANIFEST} names an unsafe path {name!r}; do not deploy this bundle."
            )
        if not file_path.is_file():
            raise IntegrityError(f"{root} is missing {name}; export the bundle again.")
        if _sha256_file(file_path) != entry["sha256"]:
            raise IntegrityError(
                f"{name} in {root} was changed after export (sha256 mismatch); do not deploy it."
            )
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    extra = sorted(
        present - set(listed) - {MANIFEST, SIGNATURE} - {n for n in present if "__pycache__" in n}
    )
    if extra:
        raise IntegrityError(
            f"{root} holds files not in its manifest ({', '.join(extra[:3])}); do not deploy it."
        )
    manifest["_root"] = str(root)
    return manifest


def image_quality(pixels: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """(N, 4) brightness, contrast, sharpness (Laplacian variance), colourfulness per image.

    Takes the resized NHWC uint8 model input (`Preprocessing.to_uint8`), so the numbers do not
    depend on camera resolution and the server computes exactly what the bundle's reference holds.
    """
    rgb = np.asarray(pixels, dtype=np.float32)
    if channel_order == "BGR":
        rgb = rgb[..., ::-1]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = (
        gray[:, :-2, 1:-1]
        + gray[:, 2:, 1:-1]
        + gray[:, 1:-1, :-2]
        + gray[:, 1:-1, 2:]
        - 4 * gray[:, 1:-1, 1:-1]
    )
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    colourfulness = np.hypot(rg.std(axis=axes), yb.std(axis=axes)) + 0.3 * np.hypot(
        rg.mean(axis=axes), yb.mean(axis=axes)
    )
    return np.stack(
        [gray.mean(axis=axes), gray.std(axis=axes), lap.var(axis=axes), colourfulness], axis=1
    ).astype(np.float32)


class ImagePrediction(NamedTuple):
    """One image's result."""

    probabilities: np.ndarray
    defect_score: float
    decision: str
    embedding: np.ndarray
    predicted_class: str


@dataclass(frozen=True)
class EdgePrediction:
    """A batch of results; iterate for one `ImagePrediction` per image."""

    probabilities: np.ndarray  # (N, C) float32
    defect_scores: np.ndarray  # (N,) = 1 - p(good)
    flagged: np.ndarray  # (N,) bool: defect_score > threshold
    decisions: list[str]  # 'good' or the defect label of the most likely defect class
    embeddings: np.ndarray  # (N, D) float32
    predicted_classes: list[str]

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
            )


class EdgeModel:
    """A bundle's model with its preprocessing and operating threshold."""

    def __init__(
        self, manifest: dict[str, Any], precision: str | None = None, threads: int | None = None
    ):
        import onnxruntime as ort

        self.manifest = manifest
        self.root = Path(manifest["_root"])
        self.name: str = manifest["name"]
        self.version: str = manifest["version"]
        self.classes: list[str] = list(manifest["classes"])
        self.class_labels: dict[str, str] = dict(manifest["class_labels"])
        self.threshold: float = float(manifest["threshold"])
        self.preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        self.max_pixels: int = int(manifest.get("max_pixels", 40_000_000))
        models = manifest["models"]
        self.precision = precision or manifest["deployed"]
        if self.precision not in models:
            raise ConfigError(
                f"Bundle {self.name} has no {self.precision} model; pick one of {', '.join(models)}."
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.root / models[self.precision]["file"]),
            options,
            providers=["CPUExecutionProvider"],
        )

    def predict_array(self, batch: np.ndarray) -> EdgePrediction:
        """Predict a preprocessed NCHW float32 batch."""
        probabilities, embeddings = self.session.run(
            ["probabilities", "embedding"], {"image": np.ascontiguousarray(batch, dtype=np.float32)}
        )
        scores = 1.0 - probabilities[:, 0]
        flagged = scores > self.threshold
        defect_best = 1 + np.argmax(probabilities[:, 1:], axis=1)
        decisions = [
            self.class_labels[self.classes[int(j)]] if flag else "good"
            for flag, j in zip(flagged, defect_best)
        ]
        predicted = [self.classes[int(j)] for j in np.argmax(probabilities, axis=1)]
        return EdgePrediction(probabilities, scores, flagged, decisions, embeddings, predicted)

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
) -> EdgeModel:
    """Verify a bundle (directory or .tar.gz; signature too when `pubkey` is given) and load it."""
    return EdgeModel(verify_bundle(path, pubkey), precision=precision, threads=threads)
