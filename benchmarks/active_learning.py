"""Active learning vs random selection on the synthetic apple line: recall at the FRR budget
against the number of labels, same model, same budget, several seeds, in one run.

The model is deliberately cheap so that a round costs a fraction of a second on a busy CPU: a
logistic regression (scikit-learn) on frozen features of the project's default backbone
(EfficientNet-Lite0, offline ImageNet weights; PCA-reduced, fitted on the unlabelled pool). The
pool and test set are rendered once; each seed draws its own random starting set (and random
arm). The same comparison then runs on the real magnetic tiles, split by physical tile. Every strategy starts from the same labelled seed set, each round fits the
model on what is labelled, picks `--step` more pool images with visionline's `select`, reveals
their true labels (the simulated operator), and measures defect recall on a held-out test set at
the project's false-reject budget (threshold set on the test set's good apples, so every arm is
measured at exactly that FRR).

    .venv/bin/python benchmarks/active_learning.py            # pool 3000, 100 → 1000 labels, 3 seeds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import write_result

from visionline.data._selection import ModelScores, Strategy, select
from visionline.synth import Subtype, SynthConfig, SynthLine

RESULTS = Path(__file__).resolve().parent / "results"
TILES = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic-tile-defect"
STRATEGIES = [Strategy.RANDOM, Strategy.UNCERTAINTY, Strategy.DIVERSITY, Strategy.MIXED]


def embed(pixels: list[np.ndarray]) -> np.ndarray:
    """Frozen ImageNet EfficientNet-Lite0 features (the project's default backbone, offline
    weights), pooled: the representation a linear head on that backbone sees."""
    import torch

    from visionline.train._backbones import create_backbone, load_pretrained

    net = create_backbone("efficientnet_lite0")
    load_pretrained(net, "efficientnet_lite0", "imagenet")
    net.eval()
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0
    batch = (batch - 0.498) / 0.502
    with torch.inference_mode():
        return np.concatenate([net(batch[i : i + 128]).numpy() for i in range(0, len(batch), 128)])


def render(n: int, seed: int, defect_rate: float, size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`n` apples of the line with this seed, each a defect with probability `defect_rate`."""
    line = SynthLine(SynthConfig(size=size, seed=seed))
    rng = np.random.default_rng(seed)
    subtypes = list(Subtype)
    pixels, labels = [], []
    for index in range(n):
        defect = rng.random() < defect_rate
        subtype = subtypes[rng.integers(len(subtypes))] if defect else None
        pixels.append(line.render(index, subtype).pixels)
        labels.append(int(defect))
    return pixels, np.asarray(labels)


def recall_at_frr(scores: np.ndarray, labels: np.ndarray, frr: float) -> float:
    good = np.sort(scores[labels == 0])
    threshold = good[min(len(good) - 1, int(np.ceil((1 - frr) * len(good))) - 1)]
    return float((scores[labels == 1] > threshold).mean())


def fit_scores(x_train: np.ndarray, y_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y_train.tolist())) < 2:  # no defect labelled yet: no ranking beyond chance
        return [np.full(len(o), 0.5) for o in others]
    model = LogisticRegression(C=1.0, max_iter=400, class_weight="balanced")
    model.fit(x_train, y_train)
    return [model.predict_proba(o)[:, 1] if len(o) else np.zeros(0) for o in others]


def run_arm(
    strategy: Strategy,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    start: np.ndarray,
    step: int,
    rounds: int,
    frr: float,
    seed: int,
) -> list[float]:
    labelled = list(start)
    curve = []
    for round_ in range(rounds + 1):
        pool = np.setdiff1d(np.arange(len(x)), labelled)
        pool_scores, test_scores, train_scores = fit_scores(
            x[labelled], y[labelled], x[pool], x_test, x[labelled]
        )
        curve.append(recall_at_frr(test_scores, y_test, frr))
        if round_ == rounds:
            break
        good = np.sort(train_scores[y[labelled] == 0])
        threshold = float(good[int(np.ceil((1 - frr) * len(good))) - 1]) if len(good) else 0.5
        model = ModelScores("lr", {}, threshold)
        chosen = select(
            strategy,
            step,
            n_pool=len(pool),
            scores=[pool_scores],
            models=[model],
            embeddings=x[pool],
            labelled_embeddings=x[labelled],
            seed=seed * 1000 + round_,
        )
        labelled.extend(int(pool[i]) for i in chosen.indices)
    return curve


def labels_to_reach(curve: np.ndarray, target: float, counts: list[int]) -> int | None:
    hit = np.nonzero(curve >= target - 1e-9)[0]
    return counts[int(hit[0])] if len(hit) else None


def load_tiles(root: Path, size: int, seed: int) -> tuple[list, np.ndarray, list, np.ndarray]:
    """The magnetic tiles split by physical tile (visionline's `sequence` grouping): 70% of the
    tiles form the pool, the rest the test set, so no tile's other lighting runs leak."""
    from PIL import Image

    from visionline.data._groups import TILE_SPEC, group_ids

    paths = sorted(root.glob("MT_*/Imgs/*.jpg"))
    if not paths:
        raise SystemExit(f"No magnetic tiles under {root}; pass --tiles with their folder.")
    groups = group_ids([p.relative_to(root).as_posix() for p in paths], TILE_SPEC)
    names = sorted(set(groups))
    test_groups = set(np.random.default_rng(seed).permutation(names)[: int(0.3 * len(names))])
    pixels = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in paths]
    labels = np.asarray([int(p.parts[-3] != "MT_Free") for p in paths])
    is_test = np.asarray([g in test_groups for g in groups])
    pool = [px for px, t in zip(pixels, is_test, strict=True) if not t]
    test = [px for px, t in zip(pixels, is_test, strict=True) if t]
    return pool, labels[~is_test], test, labels[is_test]


def compare(
    name: str,
    pool: list,
    y: np.ndarray,
    test: list,
    y_test: np.ndarray,
    args: argparse.Namespace,
    start_size: int,
    step: int,
    rounds: int,
) -> dict:
    """Every strategy on one data set: mean recall curves, labels to reach random's final
    recall, README rows."""
    from sklearn.decomposition import PCA

    began = time.perf_counter()
    x, x_test = embed(pool), embed(test)
    pca = PCA(args.dims, random_state=0).fit(x)  # unsupervised: fitted on the unlabelled pool
    x, x_test = pca.transform(x), pca.transform(x_test)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, x_test = (x - mean) / std, (x_test - mean) / std
    print(
        f"{name}: embedded {len(x)} pool + {len(x_test)} test images in "
        f"{time.perf_counter() - began:.0f} s"
    )
    counts = [start_size + r * step for r in range(rounds + 1)]
    curves: dict[str, list[list[float]]] = {s.value: [] for s in STRATEGIES}
    for seed in range(args.seeds):
        start = np.random.default_rng(seed).choice(len(x), start_size, replace=False)
        for strategy in STRATEGIES:
            curve = run_arm(strategy, x, y, x_test, y_test, start, step, rounds, args.frr, seed)
            curves[strategy.value].append(curve)
            print(f"{name} seed {seed} {strategy.value:12s} " + " ".join(f"{r:.2f}" for r in curve))
    means = {key: np.mean(c, axis=0) for key, c in curves.items()}
    target = float(means["random"][-1])
    summary, rows = {}, []
    for key, curve in means.items():
        needed = labels_to_reach(curve, target, counts)
        saving = None if needed is None else 1 - needed / counts[-1]
        summary[key] = {
            "recall_mean": [round(float(v), 4) for v in curve],
            "recall_std": [round(float(v), 4) for v in np.std(curves[key], axis=0)],
            "labels_to_reach_random_final": needed,
            "label_saving": None if saving is None else round(saving, 3),
        }
        if key != "random":
            rows.append(
                {
                    "benchmark": f"active_learning ({name})",
                    "measure": f"labels to reach random's recall@{args.frr:.0%}FRR "
                    f"({target:.1%} at {counts[-1]})",
                    "visionline": f"{key}: {needed if needed else f'> {counts[-1]}'} labels",
                    "peer": f"random: {counts[-1]} labels",
                    "result": f"{saving:.0%} fewer" if saving is not None else "not reached",
                }
            )
        print(f"{name} {key:12s} final {curve[-1]:.3f}  labels to reach {target:.3f}: {needed}")
    return {
        "pool": len(x),
        "test": len(x_test),
        "defects_in_test": int(y_test.sum()),
        "label_counts": counts,
        "random_final_recall": round(target, 4),
        "strategies": summary,
        "readme": rows,
    }


def plot(results: dict[str, dict], frr: float, path: Path) -> None:
    """Recall at the FRR budget against labels, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        for key, arm in result["strategies"].items():
            mean, std = np.asarray(arm["recall_mean"]), np.asarray(arm["recall_std"])
            ax.plot(
                result["label_counts"],
                mean,
                marker="o",
                ms=3,
                label=key,
                ls="--" if key == "random" else "-",
            )
            ax.fill_between(result["label_counts"], mean - std, mean + std, alpha=0.12)
        ax.set(title=name, xlabel="labels", ylabel=f"defect recall at {frr:.0%} FRR")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1500)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--defect-rate", type=float, default=0.1)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--dims", type=int, default=64, help="PCA dimensions of the features")
    parser.add_argument("--frr", type=float, default=0.02, help="the project's FRR budget")
    parser.add_argument("--tiles", type=Path, default=TILES, help="magnetic tiles folder")
    parser.add_argument("--tile-size", type=int, default=160, help="cracks are thin: more pixels")
    parser.add_argument("--tile-start", type=int, default=50)
    parser.add_argument("--tile-step", type=int, default=50)
    parser.add_argument("--tile-rounds", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="print, write no JSON")
    args = parser.parse_args()

    began = time.perf_counter()
    pool, y = render(args.pool, 1, args.defect_rate, args.size)
    test, y_test = render(args.test, 2, args.defect_rate, args.size)
    results = {
        "synthetic apples": compare(
            "synthetic apples", pool, y, test, y_test, args, args.start, args.step, args.rounds
        )
    }
    tiles = load_tiles(args.tiles, args.tile_size, seed=0)
    results["magnetic tiles"] = compare(
        "magnetic tiles", *tiles, args, args.tile_start, args.tile_step, args.tile_rounds
    )
    if args.dry_run:
        return
    figure = RESULTS / "active_learning.png"
    plot(results, args.frr, figure)
    path = write_result(
        "active_learning",
        {
            "setup": {
                **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "model": "LogisticRegression (balanced) on "
                "frozen ImageNet EfficientNet-Lite0 features, PCA to --dims",
                "seconds": round(time.perf_counter() - began, 1),
            },
            "datasets": results,
            "plot": str(figure.relative_to(RESULTS.parent.parent)),
            "readme": [row for result in results.values() for row in result["readme"]],
        },
    )
    print(f"wrote {path} and {figure}")


if __name__ == "__main__":
    main()
