"""Training throughput: `visionline.train.fit` against a bare PyTorch loop, in one run.

Both train the same model (mobilenetv3_small_100 from scratch) on the same synthetic images with
the same batch size and the same torchvision v2 augmentations; each measures images/s over one
full epoch after a warm-up epoch. fit's epoch also pays for what it adds (per-step schedule,
live loss, progress bar); checkpointing, validation and MLflow happen outside the timed epoch in
both cases. The two run interleaved `--repeats` times (at least 3); the figure of
merit is the median of the per-repeat ratios fit/bare (target ≥ 0.9), next to each side's median.

    .venv/bin/python benchmarks/train_throughput.py [--images 512] [--size 128] [--repeats 3] [--threads N]

`--recipe` measures the two-stage recipe instead (efficientnet_lite0 from the offline ImageNet
weights, `TrainConfig()`'s defaults): stage 1's images/s through the frozen backbone (embeddings
computed, not cached) and stage 2's fine-tuning images/s (top blocks, BatchNorm frozen), against a
bare loop that fine-tunes the whole pretrained network, the same way interleaved per repeat.
Written to `train_throughput_recipe.json`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _record import write_result
from PIL import Image

from visionline.config import Project, init_project
from visionline.data import DatasetRepo, ImageRecord
from visionline.preprocessing import Preprocessing
from visionline.train import ModelSpec, TrainConfig, build_model, fit
from visionline.train._data import AugmentedPixels, PixelCache, build_augment, normalize_batch


def synthetic_project(root: Path, n_images: int, size: int) -> tuple[Project, object]:
    """A project whose dataset holds `n_images` PNGs (good / bruise / rot), 1/8 of them val."""
    init_project(root, name="throughput")
    project = Project.load(root)
    repo = DatasetRepo(project)
    rng = np.random.default_rng(0)
    kinds = [("good", None), ("defect", "bruise"), ("defect", "rot")]
    records = []
    for i in range(n_images):
        label, subtype = kinds[i % 3]
        pixels = rng.normal(160, 20, (size, size, 3))
        if subtype == "bruise":
            pixels[np.arange(size), np.clip(np.arange(size) + rng.integers(-9, 9), 0, size - 1)] = (
                30
            )
        elif subtype == "rot":
            y, x = rng.integers(size // 4, 3 * size // 4, 2)
            pixels[y - size // 10 : y + size // 10, x - size // 10 : x + size // 10] = 50
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
        data = buffer.getvalue()
        records.append(
            ImageRecord(
                repo.blobs.put(data),
                f"{i:05d}.png",
                len(data),
                size,
                size,
                "RGB",
                label,
                subtype,
                "synth",
                "val" if i % 8 == 0 else "train",
            )
        )
    return project, repo.create_version(records, "throughput", None, {})


def bare_loop(project: Project, version, config: TrainConfig) -> float:
    """The loop a user would write by hand: DataLoader → normalise → forward → backward → step."""
    from visionline.train import load_pretrained
    from visionline.train._backbones import normalization_for

    mean, std = normalization_for(config.backbone.value, config.pretrained)
    preprocessing = Preprocessing(size=config.image_size, mean=mean, std=std)
    spec = ModelSpec(config.backbone.value, project.config.model_classes(), preprocessing)
    records = version.split_records("train")
    classes = spec.class_names
    labels = np.array([classes.index(r.subtype or r.label) for r in records])
    pixels = PixelCache(DatasetRepo(project).blobs, preprocessing, None).stack(records)
    dataset = AugmentedPixels(pixels, labels, build_augment(config.augment, config.image_size))
    torch.manual_seed(config.seed)
    model = build_model(spec)
    load_pretrained(model.backbone, config.backbone.value, config.pretrained)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    criterion = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=True
    )
    rate = 0.0
    for _ in range(2):  # warm-up epoch, then the timed one
        model.train()
        seen, started = 0, time.perf_counter()
        for images, targets in loader:
            loss = criterion(model(normalize_batch(images, preprocessing)), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(targets)
        rate = seen / (time.perf_counter() - started)
    return rate


def visionline_fit(project: Project, version, config: TrainConfig, out: Path) -> float:
    result = fit(config, version, project, out_dir=out, progress=True)
    return result.history[-1]["train_images_per_s"]


def recipe_fit(project: Project, version, config: TrainConfig, out: Path) -> dict[str, float]:
    """One `fit` of the recipe: stage-1 embedding images/s and head seconds, stage-2 images/s."""
    result = fit(config, version, project, out_dir=out, progress=True)
    head = result.head_metrics or {}
    return {
        "embed_images_per_s": head["embedded_images"] / head["embed_seconds"],
        "head_seconds": head["fit_seconds"],
        "finetune_images_per_s": result.history[-1]["train_images_per_s"],
    }


def run_recipe(args: argparse.Namespace) -> None:
    """The recipe's two stages against a bare loop fine-tuning the whole pretrained network."""
    with tempfile.TemporaryDirectory() as tmp:
        project, version = synthetic_project(Path(tmp) / "proj", args.images, args.size)
        config = TrainConfig(
            epochs=2,
            patience=2,
            batch_size=args.batch_size,
            image_size=args.size,
            device="cpu",
            deterministic=False,
            cache_pixels=False,
        )
        bare, ours = [], []
        for repeat in range(args.repeats):
            bare.append(bare_loop(project, version, config))
            ours.append(recipe_fit(project, version, config, Path(tmp) / f"run{repeat}"))
            print(f"repeat {repeat + 1}: bare {bare[-1]:.1f} img/s, recipe {ours[-1]}")
    median = {k: statistics.median(o[k] for o in ours) for k in ours[0]}
    bare_median = statistics.median(bare)
    finetune_ratio = median["finetune_images_per_s"] / bare_median
    embed_ratio = median["embed_images_per_s"] / bare_median
    result = {
        "benchmark": "train_throughput_recipe",
        "model": "efficientnet_lite0 (offline ImageNet weights)",
        "images": args.images,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "recipe_config": {
            k: str(v)
            for k, v in config.flat().items()
            if k.startswith(("head_", "finetune", "embedding", "freeze"))
        },
        "bare_full_finetune_images_per_s": [round(v, 2) for v in bare],
        "recipe_per_repeat": [{k: round(v, 2) for k, v in o.items()} for o in ours],
        "bare_median_images_per_s": round(bare_median, 2),
        "recipe_median": {k: round(v, 2) for k, v in median.items()},
        "finetune_over_bare": round(finetune_ratio, 3),
        "embed_over_bare": round(embed_ratio, 3),
        "notes": "Interleaved repeats (bare, then the recipe's fit). Bare: a hand-written loop "
        "fine-tuning every layer of the pretrained lite0, second epoch timed. Recipe: stage 1 "
        "embeds every train+val image once through the frozen backbone (images/s, nothing cached) "
        "and fits the head on those vectors (seconds); stage 2's second fine-tuning epoch "
        "(top blocks only, BatchNorm frozen, augmentation as the defaults) is timed like bare.",
        "readme": [
            {
                "benchmark": "train_throughput",
                "measure": f"recipe training images/s, efficientnet_lite0 @{args.size}, CPU "
                f"({torch.get_num_threads()} threads), median of {args.repeats}",
                "visionline": f"stage 2 (top {config.finetune_blocks} blocks): "
                f"{median['finetune_images_per_s']:.1f} img/s; stage 1 embedding "
                f"{median['embed_images_per_s']:.1f} img/s + head {median['head_seconds']:.1f} s",
                "peer": f"bare loop, whole network: {bare_median:.1f} img/s",
                "result": f"{finetune_ratio:.2f}x (stage 2), {embed_ratio:.2f}x (stage 1 embedding)",
            }
        ],
    }
    path = write_result("train_throughput_recipe", result)
    print(
        f"recipe stage 2 / bare = {finetune_ratio:.2f}, stage 1 / bare = {embed_ratio:.2f}; wrote {path}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both sides (default: torch's); 1 keeps a busy shared box steady",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--recipe",
        action="store_true",
        help="time the two-stage recipe (lite0, ImageNet) against a bare whole-network loop",
    )
    args = parser.parse_args()
    if args.repeats < 3:
        raise SystemExit("Use --repeats 3 or more: the result is a median of repeats.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.recipe:
        return run_recipe(args)

    with tempfile.TemporaryDirectory() as tmp:
        project, version = synthetic_project(Path(tmp) / "proj", args.images, args.size)
        config = TrainConfig(
            backbone="mobilenetv3_small_100",
            pretrained="none",
            epochs=2,
            batch_size=args.batch_size,
            image_size=args.size,
            freeze_epochs=0,
            augment=0.5,
            device="cpu",
            balance="none",
            deterministic=False,
            cache_pixels=False,
        )
        bare, ours = [], []
        for repeat in range(args.repeats):  # interleaved, so load changes hit both sides
            bare.append(bare_loop(project, version, config))
            ours.append(visionline_fit(project, version, config, Path(tmp) / f"run{repeat}"))
            print(f"repeat {repeat + 1}: bare {bare[-1]:.1f} img/s, fit {ours[-1]:.1f} img/s")
    ratios = [o / b for o, b in zip(ours, bare)]
    ratio = statistics.median(ratios)
    of_medians = statistics.median(ours) / statistics.median(bare)
    meets = min(ratio, of_medians) >= 0.9
    result = {
        "benchmark": "train_throughput",
        "model": "mobilenetv3_small_100",
        "images": args.images,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "augment": 0.5,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "bare_images_per_s": [round(v, 2) for v in bare],
        "fit_images_per_s": [round(v, 2) for v in ours],
        "bare_median_images_per_s": round(statistics.median(bare), 2),
        "fit_median_images_per_s": round(statistics.median(ours), 2),
        "ratio_per_repeat": [round(r, 3) for r in ratios],
        "ratio_fit_over_bare_median": round(ratio, 3),
        "target_ratio": 0.9,
        "ratio_of_medians": round(of_medians, 3),
        "meets_target": meets,
        "notes": "Interleaved repeats (bare, then fit, per repeat); each side's images/s is its "
        "second epoch after a warm-up epoch. Two ratios: of the two medians, and the median of the "
        "paired per-repeat ratios (a pair shares the load of its moment); the target must hold for "
        "both.",
        "readme": [
            {
                "benchmark": "train_throughput",
                "measure": f"training images/s, mobilenetv3_small_100 @{args.size}, CPU "
                f"({torch.get_num_threads()} threads), median of {args.repeats}",
                "visionline": f"fit: {statistics.median(ours):.1f} img/s",
                "peer": f"bare PyTorch loop: {statistics.median(bare):.1f} img/s",
                "result": f"{of_medians:.2f}x of the medians; paired per repeat "
                f"{min(ratios):.2f}–{max(ratios):.2f}x, median {ratio:.2f}x (target ≥ 0.9 on "
                f"both {'✓' if meets else '✗'})",
            }
        ],
    }
    path = write_result("train_throughput", result)
    print(f"fit / bare PyTorch = {ratio:.3f} median of {args.repeats} (target ≥ 0.9); wrote {path}")


if __name__ == "__main__":
    main()
