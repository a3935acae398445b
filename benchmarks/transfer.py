"""Transfer learning on real data: efficientnet_lite0 from the offline ImageNet weights vs. the
same network from scratch and vs. a classical baseline, same split, on the magnetic-tile photos.

The 1,344 grayscale tiles of `../shared/data/magnetic-tile-defect` are ingested into a temporary
project (good + defect[blowhole, break, crack, fray, uneven]) and split 70/15/15 by physical tile
(`visionline.data.TILE_SPEC`: the photos of one tile under its six lighting runs stay in one
split). Both networks train with `TrainConfig()`'s defaults at the same image size, epochs, batch
size and seed; only the start differs. From the ImageNet weights that is the two-stage recipe (a
head fitted on cached frozen embeddings, then the top blocks fine-tuned with BatchNorm frozen);
from scratch the whole network trains (the recipe's stages need pretrained features). The
classical baseline is the leaderboard's (`visionline.leaderboard.classical_features`: HSV
histograms, LBP, GLCM, Gabor, local contrast, HOG) with a standardised, class-balanced logistic
regression. Scored on the test split: defect recall with the threshold set on val at <= 2 % false
rejects, the false-reject rate it gives on test, accuracy and ROC AUC. The figure of merit is the
ratio of test defect recall (ImageNet / scratch).

    .venv/bin/python benchmarks/transfer.py [--size 192] [--epochs 4] [--augment 0.5]
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
            "seed": seed,
            "device": "cpu",
            "patience": epochs,
            "augment": augment,
        }
        arms = {
            "imagenet": TrainConfig(pretrained="imagenet", **common),
            "scratch": TrainConfig(pretrained="none", **common),
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
                "config": {
                    k: v
                    for k, v in cfg.flat().items()
                    if k in RECIPE_KEYS or k in ("pretrained", "lr", "backbone_lr_mult")
                },
                "train_s": round(seconds, 1),
                "best_epoch": result.best_epoch,
                **scores(result.model_path, project, version),
            }
            print(f"{name}: {out[name]}", flush=True)
        started = time.perf_counter()
        out["classical"] = classical(project, version)
        if out["classical"] is not None:
            out["classical"]["train_s"] = round(time.perf_counter() - started, 1)
        print(f"classical: {out['classical']}", flush=True)
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
        "classical": out["classical"],
        "ratio_test_defect_recall_imagenet_over_scratch": (
            pre["test_defect_recall"] / scratch["test_defect_recall"]
            if scratch["test_defect_recall"] > 0
            else None
        ),
        "delta_test_defect_recall_pp": 100
        * (pre["test_defect_recall"] - scratch["test_defect_recall"]),
        "delta_test_accuracy_pp": 100 * (pre["test_accuracy"] - scratch["test_accuracy"]),
    }


RECIPE_KEYS = ("head_epochs", "finetune_blocks", "freeze_epochs", "freeze_batchnorm")


def classical(project: Project, version) -> dict | None:
    """The leaderboard's colour/texture features with a standardised, class-balanced logistic
    regression on the train split; threshold on val at the false-reject goal, scored on test.
    None where this checkout has no `visionline.leaderboard` (the result then says so)."""
    try:
        from visionline.leaderboard import classical_features
    except ImportError:
        return None
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from visionline.evaluate import roc_auc, threshold_for_false_reject_rate
    from visionline.preprocessing import decode_image
    from visionline.train._data import split_labels

    blobs = DatasetRepo(project).blobs
    names = project.config.model_classes()
    data = {}
    for split in ("train", "val", "test"):
        records, labels = split_labels(version, split, names)
        images = [decode_image(blobs.get(r.sha256)) for r in records]
        data[split] = (classical_features(images), labels)
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced", random_state=0),
    )
    model.fit(*data["train"])
    good = list(model.classes_).index(0)
    scored = {s: (1 - model.predict_proba(x)[:, good], y) for s, (x, y) in data.items()}
    val_score, val_y = scored["val"]
    threshold = threshold_for_false_reject_rate(val_score[val_y == 0], 0.02)
    out: dict = {"model": "StandardScaler + LogisticRegression(C=0.1, balanced)"}
    for split in ("val", "test"):
        score, y = scored[split]
        predicted = model.classes_[model.predict_proba(data[split][0]).argmax(1)]
        out[f"{split}_defect_recall"] = float((score[y != 0] > threshold).mean())
        out[f"{split}_false_reject_rate"] = float((score[y == 0] > threshold).mean())
        out[f"{split}_accuracy"] = float(np.mean(predicted == y))
        out[f"{split}_roc_auc"] = roc_auc(y != 0, score)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", type=float, default=0.5)
    args = parser.parse_args()
    result = run(args.size, args.epochs, args.seed, args.augment)
    pre, scratch = result["imagenet"], result["scratch"]
    base = result["classical"] or {"test_defect_recall": float("nan")}
    if result["classical"] is None:
        result["classical"] = "not run: visionline.leaderboard is not in this checkout"
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
        },
    ]
    if "test_false_reject_rate" in base:
        result["readme"].append(
            {
                "benchmark": "transfer",
                "measure": "magnetic tiles, test defect recall at ≤ 2% FRR (val threshold), "
                f"recipe @{args.size} vs classical colour/texture features",
                "visionline": f"offline ImageNet start: {pre['test_defect_recall']:.3f} "
                f"(test FRR {pre['test_false_reject_rate']:.3f})",
                "peer": f"classical features + logistic regression: {base['test_defect_recall']:.3f} "
                f"(test FRR {base['test_false_reject_rate']:.3f})",
                "result": f"{100 * (pre['test_defect_recall'] - base['test_defect_recall']):+.0f} pts",
            }
        )
    path = write_result("transfer", result)
    print(
        f"test defect recall at FRR<=2% (val threshold): ImageNet {pre['test_defect_recall']:.3f} "
        f"vs scratch {scratch['test_defect_recall']:.3f} "
        f"(ratio {result['ratio_test_defect_recall_imagenet_over_scratch']}); accuracy "
        f"{pre['test_accuracy']:.3f} vs {scratch['test_accuracy']:.3f}; classical "
        f"{base['test_defect_recall']:.3f}; wrote {path}"
    )


if __name__ == "__main__":
    main()
