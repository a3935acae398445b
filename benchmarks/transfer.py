"""Transfer learning on real data: efficientnet_lite0 from the offline ImageNet weights vs. the
same network from scratch, same budget, on the magnetic-tile defect photos.

The 1,344 grayscale tiles of `../shared/data/magnetic-tile-defect` are ingested into a temporary
project (good + defect[blowhole, break, crack, fray, uneven]) and split 70/15/15 by physical tile
(`visionline.data.TILE_SPEC`: the photos of one tile under its six lighting runs stay in one split). Both runs use the same image size, epochs, batch size, seed
and head learning rate; each gets its natural schedule (a one-epoch frozen warm-up and a 0.3×
backbone learning rate for the pretrained net, everything trainable for the scratch net). Scored on
the test split: defect recall with the threshold set on val at ≤ 2 % false rejects, the
false-reject rate it gives on test, and accuracy. The figure of merit is the ratio of test defect
recall (ImageNet / scratch).

    .venv/bin/python benchmarks/transfer.py [--size 64] [--epochs 2] [--augment 0]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from visionline.config import Project, dump_config, parse_config
from visionline.data import TILE_SPEC, DatasetRepo
from visionline.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent))
from _record import write_result
from distill import scores

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "magnetic-tile-defect"
SUBTYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
PROJECT_YAML = f"""
name: magnetic-tiles
classes:
- name: good
- name: defect
  subtypes: [{", ".join(s.lower() for s in SUBTYPES)}]
goals:
  max_false_reject_rate: 0.02
"""


def run(size: int, epochs: int, seed: int, augment: float) -> dict:
    if not DATA.is_dir():
        raise SystemExit(f"magnetic-tile dataset not found at {DATA.resolve()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiles"
        root.mkdir()
        (root / "visionline.yaml").write_text(dump_config(parse_config(PROJECT_YAML)))
        project = Project.load(root)
        repo = DatasetRepo(project)
        label_map = {"MT_Free": "good"} | {f"MT_{s}": f"defect/{s.lower()}" for s in SUBTYPES}
        added = repo.add(DATA, name="magnetic-tiles", label_map=label_map, masks=True).version
        version = repo.split(added.id, val=0.15, test=0.15, seed=0, group_by=TILE_SPEC)
        tracking = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        common = {
            "backbone": "efficientnet_lite0",
            "image_size": size,
            "epochs": epochs,
            "batch_size": 32,
            "lr": 3e-3,
            "seed": seed,
            "device": "cpu",
            "patience": epochs,
            "augment": augment,
        }
        arms = {
            "imagenet": TrainConfig(
                pretrained="imagenet", freeze_epochs=1, backbone_lr_mult=0.3, **common
            ),
            "scratch": TrainConfig(
                pretrained="none", freeze_epochs=0, backbone_lr_mult=1.0, **common
            ),
        }
        out: dict[str, dict] = {}
        for name, cfg in arms.items():
            started = time.perf_counter()
            result = fit(
                cfg,
                version,
                project,
                out_dir=Path(tmp) / name,
                tracking_uri=tracking,
                progress=False,
            )
            seconds = time.perf_counter() - started
            out[name] = {
                "pretrained": cfg.pretrained,
                "freeze_epochs": cfg.freeze_epochs,
                "backbone_lr_mult": cfg.backbone_lr_mult,
                "train_s": round(seconds, 1),
                "best_epoch": result.best_epoch,
                **scores(result.model_path, project, version),
            }
            print(f"{name}: {out[name]}", flush=True)
        counts = version.split_counts()
    pre, scratch = out["imagenet"], out["scratch"]
    return {
        "benchmark": "transfer",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "data": {
            "source": "../shared/data/magnetic-tile-defect",
            "images": sum(counts.values()),
            "split": dict(counts),
            "dataset_version": version.id,
        },
        "max_false_reject_rate": 0.02,
        "budget": {
            "backbone": "efficientnet_lite0",
            "image_size": size,
            "epochs": epochs,
            "batch_size": 32,
            "lr": 3e-3,
            "seed": seed,
            "augment": augment,
        },
        "imagenet": pre,
        "scratch": scratch,
        "ratio_test_defect_recall_imagenet_over_scratch": (
            pre["test_defect_recall"] / scratch["test_defect_recall"]
            if scratch["test_defect_recall"] > 0
            else None
        ),
        "delta_test_defect_recall_pp": 100
        * (pre["test_defect_recall"] - scratch["test_defect_recall"]),
        "delta_test_accuracy_pp": 100 * (pre["test_accuracy"] - scratch["test_accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", type=float, default=0.0)
    args = parser.parse_args()
    result = run(args.size, args.epochs, args.seed, args.augment)
    pre, scratch = result["imagenet"], result["scratch"]
    ratio = result["ratio_test_defect_recall_imagenet_over_scratch"]
    result["readme"] = [
        {
            "benchmark": "transfer",
            "measure": f"magnetic tiles, test defect recall at ≤ 2% FRR (val threshold), "
            f"efficientnet_lite0 @{args.size}, {args.epochs} epochs",
            "visionline": f"offline ImageNet start: {pre['test_defect_recall']:.3f} "
            f"(test FRR {pre['test_false_reject_rate']:.3f})",
            "peer": f"from scratch: {scratch['test_defect_recall']:.3f} "
            f"(test FRR {scratch['test_false_reject_rate']:.3f})",
            "result": "–" if ratio is None else f"{ratio:.1f}x",
        }
    ]
    path = write_result("transfer", result)
    print(
        f"test defect recall at FRR<=2% (val threshold): ImageNet {pre['test_defect_recall']:.3f} "
        f"vs scratch {scratch['test_defect_recall']:.3f} "
        f"(ratio {result['ratio_test_defect_recall_imagenet_over_scratch']}); accuracy "
        f"{pre['test_accuracy']:.3f} vs {scratch['test_accuracy']:.3f}; wrote {path}"
    )


if __name__ == "__main__":
    main()
