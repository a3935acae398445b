"""Choosing the demo's training settings without looking at the demo's own test split.

`visionline demo` used to carry settings that were changed until its gates passed on its test
split, so its test numbers flattered it. Here the candidates are compared on synthetic apples
of ANOTHER seed (same generator, same image count, size and defect rate as the demo's dataset,
same project goals and the same train/val/calib/test split fractions as the demo):

- each candidate is one `fit` (efficientnet_lite0 from the offline ImageNet weights, the
  demo's batch size and seed) in its own process on one thread;
- the choice uses the val split only: defect recall at <= 2% false rejects (threshold set on the
  val good scores); arms within one val defect of the best count as tied (one defect is noise,
  not evidence), and a tie goes to the arm with the smaller network input (every later forward
  pass of the demo, the line agent's included, costs input pixels), then to ROC AUC, then to
  training CPU time (the demo must stay <= 5 minutes on 2 cores);
- for information, each candidate's test split OF THIS OTHER SEED is also scored the way
  `visionline evaluate` scores it (threshold from the calib split's good scores at the
  project's 2% operating false-reject rate, split-conformal rank): recall, false-reject rate,
  and recall without the defects the generator marks `faint` (too faint to see by
  construction; they are counted), and the train step's CPU seconds (the demo's budget).

The chosen settings are then written into `visionline.pipeline._demo` by hand and the demo's
own test split is reported once, by `visionline demo`.

    .venv/bin/python benchmarks/demo_recipe.py [--seed 7] [--workers 2] [--arms a,b]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import write_result

MAX_FRR = 0.02

PATCHES_224_2VIEWS: dict[str, Any] = {
    "epochs": 1, "head_epochs": 60, "head_lr": 0.003, "embedding_views": 2,
    "finetune_blocks": 0, "image_size": 224, "features": "patches",
}
"""The demo's recipe (TRAIN_RECIPE at 224 px); the masked arms add pixel supervision to it."""

CANDIDATES: dict[str, dict[str, Any]] = {
    # The demo's settings before this benchmark: full-backbone fine-tuning after one frozen epoch.
    "demo_before": {
        "epochs": 8, "freeze_epochs": 1, "lr": 0.003, "backbone_lr_mult": 0.3, "augment": 0.2,
        "head_epochs": 0, "finetune_blocks": None,
    },
    # The two-stage recipe (head on cached embeddings, then the top blocks) at its defaults.
    "two_stage": {"epochs": 8, "head_epochs": 100, "finetune_blocks": 2},
    # Stage 1 only: the head on frozen embeddings of 8 fixed views (no fine-tuning at all).
    "head_only": {"epochs": 1, "head_epochs": 200, "embedding_views": 8, "finetune_blocks": 0},
    # Two-stage with more of the backbone and the old demo's faster rates and light augmentation.
    "two_stage_4blocks": {
        "epochs": 8, "head_epochs": 100, "finetune_blocks": 4, "lr": 0.003,
        "backbone_lr_mult": 0.3, "augment": 0.2,
    },
    # Stage 1 on ONE view: 8x fewer embeddings than head_only (the demo must fit in 5 minutes).
    # Whole-backbone fine-tuning was measured here too and dropped: at lr 1e-3/2e-3 with batch 32,
    # and at lr 3e-4 with batch 8 (with or without a stage-1 head first), the training loss stayed
    # at chance (1.85-1.79) for 2-3 epochs and val recall at 2% FRR at 0-3%; a fine-tuning epoch
    # after a fitted stage-1 head undid it (train loss 2.25).
    "head_only_1view": {
        "epochs": 1, "head_epochs": 200, "embedding_views": 1, "finetune_blocks": 0,
    },
    # The same with the 128 px renders upsampled to 224 px at the network input: frozen ImageNet
    # features see small defects at the scale they were trained for (5-fold logistic probe on
    # seed 7: ROC AUC 0.85 -> 0.89, recall at 2% FRR 41% -> 54%).
    "head_only_224": {
        "epochs": 1, "head_epochs": 200, "embedding_views": 1, "finetune_blocks": 0,
        "image_size": 224,
    },
    # A patch head instead of the linear one: a 1x1-conv MLP scores every cell of the map before
    # lite0's last stage (192 x 7 x 7 at 224 px) and a log-sum-exp pools the cells, so a small defect is
    # not averaged away (scratch probe on seed 7 with cached maps: val recall at 2% FRR 56% for
    # the pooled linear probe -> 80%). Max/GeM/top-k pooling of the last stage did not help (46-54%).
    "patches_224": {
        "epochs": 1, "head_epochs": 60, "head_lr": 0.003, "embedding_views": 1,
        "finetune_blocks": 0, "image_size": 224, "features": "patches",
    },
    # The same trained on two views (identity and horizontal flip) of each image.
    "patches_224_2views": PATCHES_224_2VIEWS,
    # One view at 288 px instead of two at 224: the same backbone work per training image
    # ((288/224)^2 = 1.65 < 2 views), finer cells (9 x 9) for small bruises and holes (scratch
    # probe on seed 7 with cached maps: val recall at 2% FRR 0.875 -> 0.885, test recall at a 2%
    # test FRR 0.80 -> 0.83; 352 px costs 1.23x the embedding time and was left out).
    "patches_288": {
        "epochs": 1, "head_epochs": 60, "head_lr": 0.003, "embedding_views": 1,
        "finetune_blocks": 0, "image_size": 288, "features": "patches",
    },
    # Four views (identity, horizontal and vertical flips, half turn) instead of two: 2 -> 4
    # views is the step 1 -> 2 was (86.5% -> 92.7% val recall at 356fcc3), at twice the
    # embedding time.
    "patches_224_4views": {
        "epochs": 1, "head_epochs": 60, "head_lr": 0.003, "embedding_views": 4,
        "finetune_blocks": 0, "image_size": 224, "features": "patches",
    },
    # The demo's patch head with pixel supervision: the renders' defect masks (ingested with
    # --masks) teach each cell's defect-vs-good logit, at the share of the cell the mask covers
    # or at 1 wherever it touches the cell; cells of good images are negative (mask_weight).
    "patches_224_2views_masks": {**PATCHES_224_2VIEWS, "mask_weight": 1.0},
    "patches_224_2views_masks_any": {**PATCHES_224_2VIEWS, "mask_weight": 1.0, "mask_target": "any"},
    # The same at a lighter weight: at 1 the 49 cell terms per image outweighed the image loss
    # (val ROC AUC 0.974 -> 0.960-0.961 in the first run of these arms).
    "patches_224_2views_masks_0.3": {**PATCHES_224_2VIEWS, "mask_weight": 0.3},
    "patches_224_2views_masks_any_0.3": {
        **PATCHES_224_2VIEWS,
        "mask_weight": 0.3,
        "mask_target": "any",
    },
}

PREVIOUS_DEMO = "patches_224_2views"
"""The demo's recipe before this round: the peer of the README row."""

DEMO_YAML = """name: apples
goals:
  max_false_reject_rate: 0.05
  threshold_false_reject_rate: 0.02
  min_defect_recall: 0.7
  edge_p95_latency_ms: 50
  image_size: 128
"""
"""The demo project's goals (`visionline.pipeline._demo._demo_config_yaml`)."""
DEMO = {"images": 1500, "image_size": 128, "defect_rate": 0.35, "batch_size": 32,
        "backbone": "efficientnet_lite0", "seed": 0}
"""The demo's dataset and training budget (`DemoSettings`, `_synthesise`)."""
SPLIT = {"val": 0.15, "calib": 0.15, "test": 0.2, "seed": 0}
"""The demo's `pipeline.split`: val picks the epoch, calib sets the threshold, test is measured."""


def _build(root: Path, seed: int, n_images: int) -> tuple[Path, str, dict[str, Any]]:
    """A demo-like project on apples of `seed`, ingested with their defect masks (arms without
    `mask_weight` ignore them) and split as the demo splits."""
    from visionline.config import Project
    from visionline.data import DatasetRepo
    from visionline.synth import SynthConfig, generate_dataset

    root.mkdir(parents=True)
    (root / "visionline.yaml").write_text(DEMO_YAML)
    images = root / "synth" / "dataset"
    config = SynthConfig(size=DEMO["image_size"], seed=seed, defect_rate=DEMO["defect_rate"])
    generate_dataset(config, images, n_images, masks=True)
    repo = DatasetRepo(Project.load(root))
    version = repo.add(images, name="apples-synth", masks=True).version
    version = repo.split(
        version.id, val=SPLIT["val"], test=SPLIT["test"], seed=SPLIT["seed"], calib=SPLIT["calib"]
    )
    common = {
        "backbone": DEMO["backbone"],
        "pretrained": "imagenet",
        "batch_size": DEMO["batch_size"],
        "image_size": DEMO["image_size"],
        "seed": DEMO["seed"],
        "patience": 100,
    }
    return root, version.id, common


def _faint_paths(root: Path) -> set[str]:
    """Paths (relative to the dataset folder) of the defects the generator marks `faint`."""
    with open(root / "synth" / "dataset" / "manifest.csv", newline="") as handle:
        return {row["file"] for row in csv.DictReader(handle) if row["faint"] == "True"}


def _arm(name: str, settings: dict[str, Any], base: Path, version_id: str,
         common: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from visionline.config import Project
    from visionline.data import DatasetRepo
    from visionline.evaluate import (
        choose_operating_point,
        predict_records,
        recall_at_false_reject_rate,
        roc_auc,
    )
    from visionline.train import TrainConfig, fit, load_model

    root = base.parent / f"arm-{name}"
    shutil.copytree(base, root)
    project = Project.load(root)
    started = time.perf_counter()
    cpu_started = time.process_time()
    trained = fit(TrainConfig(**{**common, **settings}), version_id, project,
                  out_dir=root / "out", progress=False)
    train_s, train_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    model, spec = load_model(trained.model_path)
    repo = DatasetRepo(project)
    version = repo.get(version_id)
    scored = {}
    for split in ("val", "calib", "test"):
        preds = predict_records(model, spec, version.split_records(split), repo.blobs)
        scored[split] = (preds.defect_scores(spec.temperature), preds.labels != 0, preds.records)
    val_scores, val_defect, _ = scored["val"]
    val_recall, _ = recall_at_false_reject_rate(val_scores, val_defect, MAX_FRR)
    calib_scores, calib_defect, _ = scored["calib"]
    threshold = choose_operating_point(calib_scores[~calib_defect], MAX_FRR).threshold
    test_scores, test_defect, test_records = scored["test"]
    flagged = test_scores > threshold
    faint = _faint_paths(root)
    visible = np.array([r.path not in faint for r in test_records]) & test_defect
    subtypes = sorted({r.subtype for r, d in zip(test_records, test_defect) if d})
    per_subtype = {
        s: float(flagged[np.array([r.subtype == s for r in test_records])].mean()) for s in subtypes
    }
    return {
        "settings": settings,
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu_s, 1),
        "best_epoch": trained.best_epoch,
        "val": {"recall_at_2pct_frr": val_recall, "roc_auc": roc_auc(val_defect, val_scores),
                "n_defect": int(val_defect.sum())},
        "other_seed_test": {
            "threshold_from": "calib",
            "threshold": threshold,
            "defect_recall": float(flagged[test_defect].mean()),
            "false_reject_rate": float(flagged[~test_defect].mean()),
            "defect_recall_without_faint": float(flagged[visible].mean()),
            "recall_per_subtype": per_subtype,
            "n_good": int((~test_defect).sum()),
            "n_defect": int(test_defect.sum()),
            "n_faint_defects": int(test_defect.sum() - visible.sum()),
            "roc_auc": roc_auc(test_defect, test_scores),
        },
    }


def _choose(results: dict[str, dict[str, Any]], common: dict[str, Any]) -> str:
    """The arm val prefers: best recall at 2% FRR, where a lead of at most one val defect is a
    tie that goes to the cheaper input, then to ROC AUC, then to training CPU time."""
    best = max(arm["val"]["recall_at_2pct_frr"] for arm in results.values())
    n_defects = max(arm["val"]["n_defect"] for arm in results.values())
    tied = [a for a, arm in results.items()
            if arm["val"]["recall_at_2pct_frr"] >= best - 1 / n_defects - 1e-9]

    def side(a: str) -> int:
        return int(results[a]["settings"].get("image_size", common["image_size"]))

    return min(tied, key=lambda a: (side(a), -results[a]["val"]["roc_auc"],
                                    results[a]["train_cpu_s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="apples seed (the demo's is 0)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", default=",".join(CANDIDATES))
    parser.add_argument("--images", type=int, default=DEMO["images"], help="smoke runs only")
    args = parser.parse_args()
    if args.seed in (DEMO["seed"], DEMO["seed"] + 1):
        raise SystemExit("Pick another --seed than the demo's dataset (0) and line (1).")
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in CANDIDATES]
    if unknown:
        raise SystemExit(f"Unknown arm(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}.")
    with tempfile.TemporaryDirectory(prefix="demo-recipe-") as tmp:
        base, version_id, common = _build(Path(tmp) / "base", args.seed, args.images)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            futures = {
                a: pool.submit(_arm, a, CANDIDATES[a], base, version_id, common) for a in arms
            }
            results = {a: f.result() for a, f in futures.items()}
    for name, arm in results.items():
        test = arm["other_seed_test"]
        print(
            f"{name:18s} val recall@2%FRR {arm['val']['recall_at_2pct_frr']:.3f} "
            f"AUC {arm['val']['roc_auc']:.3f} | seed-{args.seed} test recall "
            f"{test['defect_recall']:.3f} at FRR {test['false_reject_rate']:.3f} | "
            f"train {arm['train_s']:.0f} s"
        )
    chosen = _choose(results, common)
    print(f"chosen on val: {chosen}")
    test = results[chosen]["other_seed_test"]
    previous = next((a for a in (PREVIOUS_DEMO, "demo_before") if a in results), None)
    before = results[previous]["other_seed_test"] if previous else None
    result = {
        "benchmark": "demo_recipe",
        "apples_seed": args.seed,
        "images": args.images,
        "demo_seed": DEMO["seed"],
        "split": SPLIT,
        "common": common,
        "selection": "val recall at <= 2% FRR (within one val defect = tied), then the smaller "
        "network input, then val ROC AUC, then training CPU time",
        "chosen": chosen,
        "arms": results,
        "readme": [
            {
                "benchmark": "demo_recipe",
                "measure": f"demo settings chosen on apples of seed {args.seed} (not the demo's): "
                "test recall at the calib-split threshold for 2% false rejects",
                "visionline": f"{chosen}: {test['defect_recall']:.1%} recall, "
                f"{test['false_reject_rate']:.1%} FRR",
                "peer": (
                    f"{previous}: {before['defect_recall']:.1%} recall, "
                    f"{before['false_reject_rate']:.1%} FRR" if before else "-"
                ),
                "result": f"chosen on val; train {results[chosen]['train_cpu_s']:.0f} CPU s "
                f"(peer {results[previous]['train_cpu_s']:.0f})" if previous else
                f"chosen on val; train {results[chosen]['train_cpu_s']:.0f} CPU s",
            }
        ],
    }
    print(f"wrote {write_result('demo_recipe', result)}")


if __name__ == "__main__":
    main()
