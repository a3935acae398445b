"""Knowledge distillation: a small student trained with a teacher vs. the same student without.

Synthetic apples (the `visionline.synth` line) in a temporary project, split 70/15/15. The
teacher is efficientnet_lite2 fine-tuned from the offline ImageNet weights at `--teacher-size`;
both students are efficientnet_lite0 from its offline ImageNet weights at the smaller `--size`,
with the same data, epochs, seeds and settings, one with `teacher=<teacher model.pt>` (KD loss
mixed with the label loss; the teacher sees the student's batch resized to its own input). The
second student is structurally pruned lite0: each seed's plain student loses `--prune-ratio` of its
channels (torch-pruning) and is fine-tuned `--prune-epochs` with and without the same teacher.
Latency: each model's ONNX FP32 at batch 1 on 2 threads, mean ± sd; MACs at batch 1. Each is scored on val and test:
defect recall with the threshold set on val at the false-reject goal (`--max-frr`), the
false-reject rate that threshold gives on test, accuracy, and the defect score's ROC AUC (free of
the threshold, so the steadiest figure on a small test split). The figures of merit are the
KD − plain differences in test defect recall and ROC AUC, averaged over the seeds.

    .venv/bin/python benchmarks/distill.py [--images 800] [--size 64] [--teacher-size 96]
        [--epochs 5] [--teacher-epochs 3] [--seeds 0 1 2] [--batch-size 32] [--augment 0.2]
        [--max-frr 0.05] [--prune-ratio 0.3] [--prune-epochs 3]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _record import write_result

from visionline.config import Project, dump_config, init_project, parse_config
from visionline.data import DatasetRepo
from visionline.evaluate import (
    recall_at_false_reject_rate,
    roc_auc,
    threshold_for_false_reject_rate,
)
from visionline.export._data import load_split
from visionline.export._prune import count_macs, count_params, finetune, prune_channels
from visionline.synth import SynthConfig, generate_dataset
from visionline.train import TrainConfig, fit, load_model
from visionline.train._data import PixelCache, eval_batches, split_labels
from visionline.train._distill import DistillationLoss


def scores(model, spec, project: Project, version) -> dict[str, float]:
    """Val/test defect recall at the false-reject goal (threshold from val), accuracy, ROC AUC."""
    goal = project.config.goals.max_false_reject_rate
    cache = PixelCache(DatasetRepo(project).blobs, spec.preprocessing, None)
    out: dict[str, float] = {}
    probs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    model.eval()
    with torch.no_grad():
        for split in ("val", "test"):
            records, labels = split_labels(version, split, spec.class_names)
            pixels = cache.stack(records)
            logits = torch.cat([model(b) for _, b in eval_batches(pixels, spec.preprocessing, 128)])
            probs[split] = (logits.softmax(1).numpy(), labels)
    val_p, val_y = probs["val"]
    threshold = threshold_for_false_reject_rate(1 - val_p[val_y == 0, 0], goal)
    for split, (p, y) in probs.items():
        defect_score = 1 - p[:, 0]
        is_defect = y != 0
        out[f"{split}_defect_recall"] = float((defect_score[is_defect] > threshold).mean())
        out[f"{split}_false_reject_rate"] = float((defect_score[~is_defect] > threshold).mean())
        out[f"{split}_accuracy"] = float((p.argmax(1) == y).mean())
        out[f"{split}_roc_auc"] = roc_auc(is_defect, defect_score)
        out[f"{split}_defect_recall_at_own_threshold"] = float(
            recall_at_false_reject_rate(defect_score, is_defect, goal)[0]
        )
    out["threshold"] = float(threshold)
    return out


def measure(model, spec, project: Project, version) -> dict[str, float]:
    """Scores, batch-1 ONNX latency, parameters and MACs of one model."""
    return {
        **scores(model, spec, project, version),
        **latency_ms(model, spec.preprocessing.size),
        "params": count_params(model),
        "macs": count_macs(model, spec.preprocessing.size),
    }


def _project_with_goal(root: Path, max_frr: float) -> Project:
    """A fresh project whose false-reject goal drives early stopping and the thresholds."""
    path = init_project(root, name="distill-bench")
    config = parse_config(path.read_text())
    goals = config.goals.model_copy(update={"max_false_reject_rate": max_frr})
    path.write_text(dump_config(config.model_copy(update={"goals": goals})))
    return Project.load(root)


def latency_ms(model, size: int, runs: int = 60) -> dict[str, float]:
    """Batch-1 ONNX FP32 latency on 2 threads: mean and sd over `runs` after a warm-up."""
    from visionline.export._onnx import export_onnx, onnx_session

    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(export_onnx(model, size, Path(tmp) / "m.onnx"), 2, spinning=False)
        one = np.zeros((1, 3, size, size), np.float32)
        for _ in range(5):
            session.run(None, {"image": one})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {"image": one})
            times.append((time.perf_counter() - start) * 1000)
    return {"latency_ms_mean": float(np.mean(times)), "latency_ms_sd": float(np.std(times))}


def run(
    images: int,
    size: int,
    teacher_size: int,
    epochs: int,
    teacher_epochs: int,
    seeds: list[int],
    augment: float,
    batch_size: int,
    max_frr: float,
    prune_ratio: float,
    prune_epochs: int,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        project = _project_with_goal(Path(tmp) / "apples", max_frr)
        repo = DatasetRepo(project)
        generate_dataset(
            SynthConfig(size=max(size, teacher_size), seed=0, defect_rate=0.35),
            Path(tmp) / "synth",
            images,
        )
        added = repo.add(Path(tmp) / "synth", name="synth-apples").version
        version = repo.split(added.id, val=0.15, test=0.15, seed=0)
        tracking = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        common = {
            "batch_size": batch_size,
            "device": "cpu",
            "patience": epochs,
            "augment": augment,
        }

        started = time.perf_counter()
        teacher_cfg = TrainConfig(
            backbone="efficientnet_lite2",
            pretrained="imagenet",
            image_size=teacher_size,
            epochs=teacher_epochs,
            lr=3e-3,
            backbone_lr_mult=0.3,
            freeze_epochs=1,
            **common,
        )
        teacher = fit(
            teacher_cfg,
            version,
            project,
            out_dir=Path(tmp) / "teacher",
            tracking_uri=tracking,
            progress=False,
        )
        teacher_s = time.perf_counter() - started
        teacher_model, teacher_spec = load_model(teacher.model_path)
        teacher_scores = measure(teacher_model, teacher_spec, project, version)
        print(f"teacher efficientnet_lite2: {teacher_scores} ({teacher_s:.0f} s)")

        names = ("student", "student_kd", "pruned", "pruned_kd")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        times: dict[str, float] = dict.fromkeys(names, 0.0)
        train_pixels = None
        for seed in seeds:
            for name, extra in (
                ("student", {}),
                (
                    "student_kd",
                    {"teacher": str(teacher.model_path), "kd_alpha": 0.7, "kd_temperature": 4.0},
                ),
            ):
                cfg = TrainConfig(
                    backbone="efficientnet_lite0",
                    pretrained="imagenet",
                    image_size=size,
                    epochs=epochs,
                    lr=3e-3,
                    backbone_lr_mult=0.3,
                    freeze_epochs=1,
                    seed=seed,
                    **common,
                    **extra,
                )
                started = time.perf_counter()
                result = fit(
                    cfg,
                    version,
                    project,
                    out_dir=Path(tmp) / f"{name}-{seed}",
                    tracking_uri=tracking,
                    progress=False,
                )
                times[name] += time.perf_counter() - started
                model, spec = load_model(result.model_path)
                s = measure(model, spec, project, version)
                runs[name].append(s)
                print(f"seed {seed} {name}: {s}")
                if name != "student":
                    continue
                # The second student: this seed's plain student with `prune_ratio` of its
                # channels removed, fine-tuned for `prune_epochs` with and without the teacher.
                if train_pixels is None:
                    train_pixels = load_split(version, repo.blobs, "train", spec.preprocessing)
                for pruned_name, hook in (
                    ("pruned", None),
                    (
                        "pruned_kd",
                        DistillationLoss(teacher_model, teacher_spec, spec.preprocessing, 0.7, 4.0),
                    ),
                ):
                    started = time.perf_counter()
                    torch.manual_seed(seed)
                    pruned, _ = load_model(result.model_path)
                    prune_channels(pruned, size, prune_ratio)
                    finetune(
                        pruned,
                        list(spec.class_names),
                        spec.preprocessing,
                        train_pixels,
                        epochs=prune_epochs,
                        lr=1e-3,
                        batch_size=batch_size,
                        seed=seed,
                        teacher=hook,
                    )
                    times[pruned_name] += time.perf_counter() - started
                    s = measure(pruned, spec, project, version)
                    runs[pruned_name].append(s)
                    print(f"seed {seed} {pruned_name}: {s}")

    def mean(name: str) -> dict[str, float]:
        keys = runs[name][0].keys()
        return {k: float(np.mean([r[k] for r in runs[name]])) for k in keys}

    plain, kd = mean("student"), mean("student_kd")
    pruned, pruned_kd = mean("pruned"), mean("pruned_kd")
    return {
        "benchmark": "distill",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "data": {
            "source": "visionline.synth",
            "images": images,
            "size": size,
            "teacher_size": teacher_size,
            "defect_rate": 0.35,
            "split": "70/15/15",
            "dataset_version": version.id,
            "n_train": len(version.split_records("train")),
            "n_val": len(version.split_records("val")),
            "n_test": len(version.split_records("test")),
        },
        "max_false_reject_rate": project.config.goals.max_false_reject_rate,
        "budget": {
            "student_epochs": epochs,
            "teacher_epochs": teacher_epochs,
            "seeds": seeds,
            "batch_size": batch_size,
            "lr": 3e-3,
            "teacher_backbone_lr_mult": 0.3,
            "student_backbone_lr_mult": 0.3,
            "freeze_epochs": 1,
            "kd_alpha": 0.7,
            "kd_temperature": 4.0,
            "augment": augment,
        },
        "teacher": {
            "backbone": "efficientnet_lite2",
            "pretrained": "imagenet",
            "image_size": teacher_size,
            "train_s": round(teacher_s, 1),
            **teacher_scores,
        },
        "student": {
            "backbone": "efficientnet_lite0",
            "pretrained": "imagenet",
            "image_size": size,
            "train_s_total": round(times["student"], 1),
            **plain,
            "per_seed": runs["student"],
        },
        "student_kd": {
            "backbone": "efficientnet_lite0",
            "pretrained": "imagenet",
            "image_size": size,
            "train_s_total": round(times["student_kd"], 1),
            **kd,
            "per_seed": runs["student_kd"],
        },
        "pruned": {
            "from": "each seed's plain student",
            "prune_ratio": prune_ratio,
            "finetune_epochs": prune_epochs,
            "finetune_lr": 1e-3,
            "train_s_total": round(times["pruned"], 1),
            **pruned,
            "per_seed": runs["pruned"],
        },
        "pruned_kd": {
            "from": "each seed's plain student",
            "prune_ratio": prune_ratio,
            "finetune_epochs": prune_epochs,
            "finetune_lr": 1e-3,
            "train_s_total": round(times["pruned_kd"], 1),
            **pruned_kd,
            "per_seed": runs["pruned_kd"],
        },
        "delta_pruned_test_defect_recall_pp": 100
        * (pruned_kd["test_defect_recall"] - pruned["test_defect_recall"]),
        "delta_pruned_test_roc_auc": pruned_kd["test_roc_auc"] - pruned["test_roc_auc"],
        "ratio_test_defect_recall_kd_over_plain": (
            kd["test_defect_recall"] / plain["test_defect_recall"]
            if plain["test_defect_recall"] > 0
            else None
        ),
        "delta_test_defect_recall_pp": 100
        * (kd["test_defect_recall"] - plain["test_defect_recall"]),
        "delta_test_defect_recall_pp_per_seed": [
            100 * (k["test_defect_recall"] - p["test_defect_recall"])
            for k, p in zip(runs["student_kd"], runs["student"])
        ],
        "delta_test_accuracy_pp": 100 * (kd["test_accuracy"] - plain["test_accuracy"]),
        "delta_test_roc_auc": kd["test_roc_auc"] - plain["test_roc_auc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=64, help="student input size")
    parser.add_argument("--teacher-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--augment",
        type=float,
        default=0.2,
        help="augmentation strength; 0 lets the teacher's logits be cached",
    )
    parser.add_argument("--max-frr", type=float, default=0.05, help="false-reject goal")
    parser.add_argument("--prune-ratio", type=float, default=0.3, help="second student's pruning")
    parser.add_argument("--prune-epochs", type=int, default=3, help="its fine-tuning epochs")
    args = parser.parse_args()
    result = run(
        args.images,
        args.size,
        args.teacher_size,
        args.epochs,
        args.teacher_epochs,
        args.seeds,
        args.augment,
        args.batch_size,
        args.max_frr,
        args.prune_ratio,
        args.prune_epochs,
    )
    teacher, plain, kd = result["teacher"], result["student"], result["student_kd"]
    result["readme"] = [
        {
            "benchmark": "distill",
            "measure": f"efficientnet_lite0 student @{args.size}px (ImageNet start), lite2 teacher "
            f"@{args.teacher_size}px: test recall at ≤ {args.max_frr:.0%} FRR / ROC AUC "
            f"({args.images:,} apples, {args.epochs} epochs, mean of {len(args.seeds)} seeds)",
            "visionline": f"with teacher (KD): {kd['test_defect_recall']:.3f} / "
            f"{kd['test_roc_auc']:.3f} (teacher itself {teacher['test_defect_recall']:.3f} / "
            f"{teacher['test_roc_auc']:.3f})",
            "peer": f"without: {plain['test_defect_recall']:.3f} / {plain['test_roc_auc']:.3f}; "
            f"latency student {plain['latency_ms_mean']:.1f} ± {plain['latency_ms_sd']:.1f} ms vs teacher "
            f"{teacher['latency_ms_mean']:.1f} ± {teacher['latency_ms_sd']:.1f} ms",
            "result": f"{result['delta_test_defect_recall_pp']:+.1f} pp recall, "
            f"{result['delta_test_roc_auc']:+.3f} AUC",
        },
        {
            "benchmark": "distill",
            "measure": f"the same students with {args.prune_ratio:.0%} of channels pruned "
            f"(torch-pruning), fine-tuned {args.prune_epochs} epochs: test recall / ROC AUC",
            "visionline": f"with teacher: {result['pruned_kd']['test_defect_recall']:.3f} / "
            f"{result['pruned_kd']['test_roc_auc']:.3f}",
            "peer": f"without: {result['pruned']['test_defect_recall']:.3f} / "
            f"{result['pruned']['test_roc_auc']:.3f}; "
            f"{result['pruned']['macs'] / 1e6:.0f} vs {plain['macs'] / 1e6:.0f} MMACs unpruned",
            "result": f"{result['delta_pruned_test_defect_recall_pp']:+.1f} pp recall, "
            f"{result['delta_pruned_test_roc_auc']:+.3f} AUC",
        },
    ]
    path = write_result("distill", result)
    print(
        f"test defect recall at FRR<={result['max_false_reject_rate']:g} (val threshold): "
        f"teacher {result['teacher']['test_defect_recall']:.3f}, "
        f"student {result['student']['test_defect_recall']:.3f}, "
        f"student+KD {result['student_kd']['test_defect_recall']:.3f} "
        f"(ratio {result['ratio_test_defect_recall_kd_over_plain']}); "
        f"accuracy {result['student']['test_accuracy']:.3f} -> "
        f"{result['student_kd']['test_accuracy']:.3f}; ROC AUC "
        f"{result['student']['test_roc_auc']:.3f} -> {result['student_kd']['test_roc_auc']:.3f}; "
        f"wrote {path}"
    )


if __name__ == "__main__":
    main()
