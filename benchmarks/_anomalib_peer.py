"""The peer of benchmarks/anomaly.py: anomalib 2.7's PatchCore torch model, run in its own venv.

Runs in the anomalib virtual environment that benchmarks/anomaly.py creates, never in the
project's. It takes a job file (JSON) written by the benchmark and writes an .npz of image scores,
anomaly maps and timings. It uses anomalib's own pieces end to end: `PatchcoreModel` with its
`TimmFeatureExtractor`, embedding store, `KCenterGreedy` coreset, nearest-neighbour search,
reweighted image score and Gaussian-blurred `AnomalyMapGenerator`, and the resize + normalise
pre-processing of `Patchcore.configure_pre_processor` (squashed to a square). Two substitutions,
both so that the backbone is the same as visionline's: the weights are the offline ImageNet
weights visionline loads (anomalib would download them from the hub, which is unreachable here),
and the normalisation is the statistics those weights were trained with.

Usage (by the benchmark): <anomalib venv>/bin/python benchmarks/_anomalib_peer.py JOB.json OUT.npz
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _load(paths: list[str], transform) -> torch.Tensor:
    from torchvision.transforms.v2.functional import pil_to_tensor

    images = [pil_to_tensor(Image.open(p).convert("RGB")).float() / 255.0 for p in paths]
    return torch.stack([transform(image) for image in images])


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    import anomalib
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    size = job["image_size"]
    transform = Compose(
        [Resize((size, size), antialias=True), Normalize(mean=job["mean"], std=job["std"])]
    )
    model = PatchcoreModel(
        layers=job["layers"], backbone=job["backbone"], pre_trained=False, num_neighbors=9
    )
    trunk = model.feature_extractor.feature_extractor
    weights = torch.load(job["weights"], map_location="cpu", weights_only=True)
    missing = [k for k in trunk.state_dict() if k not in weights]
    if missing:
        raise SystemExit(
            f"the offline weights lack {len(missing)} of anomalib's tensors: {missing[:3]}"
        )
    trunk.load_state_dict({k: weights[k] for k in trunk.state_dict()})

    started = time.perf_counter()
    model.train()
    train = job["train"]
    for start in range(0, len(train), 16):
        model(_load(train[start : start + 16], transform))
    feature_seconds = time.perf_counter() - started
    coreset_started = time.perf_counter()
    model.subsample_embedding(job["coreset_ratio"])
    coreset_seconds = time.perf_counter() - coreset_started
    fit_seconds = time.perf_counter() - started
    model.eval()

    scores, maps = [], []
    paths = job["score"]
    with torch.no_grad():
        for start in range(0, len(paths), 16):
            out = model(_load(paths[start : start + 16], transform))
            scores.append(out.pred_score.reshape(-1).numpy())
            maps.append(out.anomaly_map[:, 0].numpy().astype(np.float16))
        one = [_load([p], transform) for p in paths[: job["latency_images"]]]
        model(one[0])
        times = []
        for x in one:
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    np.savez_compressed(
        sys.argv[2],
        scores=np.concatenate(scores),
        maps=np.concatenate(maps),
        fit_seconds=fit_seconds,
        feature_seconds=feature_seconds,
        coreset_seconds=coreset_seconds,
        bank_size=model.memory_bank.shape[0],
        latency_ms=float(np.median(times) * 1000),
        anomalib_version=anomalib.__version__,
        torch_version=torch.__version__,
    )


if __name__ == "__main__":
    main()
