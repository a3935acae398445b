"""GPU training check: efficientnet_lite0 with AMP on CUDA against the CPU, same data and settings.

Run it on a machine with a CUDA GPU:

    python benchmarks/gpu_train.py [--images 1024] [--size 128] [--epochs 3] [--batch-size 64]

It synthesises a small dataset in a temporary project through the public API, trains with
`visionline.train.fit` (offline ImageNet weights, bf16/fp16 autocast on CUDA) and then on the CPU
for comparison, prints images/s for both and writes benchmarks/results/gpu_train.json.
It exits with a clear message when no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from _record import write_result
from train_throughput import synthetic_project


def main() -> None:
    parser = argparse.ArgumentParser(description="efficientnet_lite0 training: CUDA+AMP vs CPU")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpu-images", type=int, default=256, help="smaller set for the CPU side")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "No CUDA GPU is visible (torch.cuda.is_available() is False); run this on a GPU machine."
        )

    from visionline.train import TrainConfig, fit

    results = {"device_name": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for device, n_images, epochs in (
            ("cuda", args.images, args.epochs),
            ("cpu", args.cpu_images, 2),
        ):
            project, version = synthetic_project(Path(tmp) / f"proj-{device}", n_images, args.size)
            config = TrainConfig(
                backbone="efficientnet_lite0",
                pretrained="imagenet",
                epochs=epochs,
                batch_size=args.batch_size,
                image_size=args.size,
                freeze_epochs=1,
                device=device,
                amp=True,
                augment=0.5,
                num_workers=4 if device == "cuda" else 0,
            )
            result = fit(config, version, project, out_dir=Path(tmp) / f"run-{device}")
            rate = max(h["train_images_per_s"] for h in result.history[1:] or result.history)
            results[device] = {
                "images": n_images,
                "epochs": epochs,
                "images_per_s": round(rate, 1),
                "best_val_defect_recall": result.best_metrics["val_defect_recall"],
                "best_val_accuracy": result.best_metrics["val_accuracy"],
                "amp": device == "cuda",
            }
            print(
                f"{device}: {rate:.1f} images/s, best val accuracy "
                f"{result.best_metrics['val_accuracy']:.3f}"
            )
    results["speedup_cuda_over_cpu"] = round(
        results["cuda"]["images_per_s"] / results["cpu"]["images_per_s"], 2
    )
    results["readme"] = [
        {
            "benchmark": "gpu_train",
            "measure": f"training images/s, efficientnet_lite0 @{args.size}, bf16 AMP",
            "visionline": f"{results['cuda']['images_per_s']:,.0f} img/s on {results['device_name']}",
            "peer": f"{results['cpu']['images_per_s']:,.0f} img/s on its {os.cpu_count()} CPU cores",
            "result": f"{results['speedup_cuda_over_cpu']:.1f}x",
        }
    ]
    path = write_result("gpu_train", results)
    print(f"CUDA+AMP / CPU = {results['speedup_cuda_over_cpu']}x; wrote {path}")


if __name__ == "__main__":
    main()
