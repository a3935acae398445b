"""Active learning vs random selection on the synthetic apple line: recall at the FRR budget
against the number of labels, same model, same budget, several seeds, in one run.

The model is deliberately cheap so that a round costs a fraction of a second on a busy CPU: a
logistic regression (scikit-learn) on frozen features of the project's default backbone
(EfficientNet-Lite0, offline ImageNet weights; PCA-reduced, fitted on the unlabelled pool). The
pool and test set are rendered once; each seed draws its own random starting set (and random
arm). Every strategy starts from the same labelled seed set, each round fits the
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
    return [model.predict_proba(o)[:, 1] for o in others]


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
    parser.add_argument("--dry-run", action="store_true", help="print, write no JSON")
    args = parser.parse_args()

    began = time.perf_counter()
    counts = [args.start + r * args.step for r in range(args.rounds + 1)]
    curves: dict[str, list[list[float]]] = {s.value: [] for s in STRATEGIES}
    pool_pixels, y = render(args.pool, 1, args.defect_rate, args.size)
    test_pixels, y_test = render(args.test, 2, args.defect_rate, args.size)
    x, x_test = embed(pool_pixels), embed(test_pixels)
    from sklearn.decomposition import PCA

    pca = PCA(args.dims, random_state=0).fit(x)  # unsupervised: fitted on the unlabelled pool
    x, x_test = pca.transform(x), pca.transform(x_test)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, x_test = (x - mean) / std, (x_test - mean) / std
    print(
        f"embedded {len(x)} pool + {len(x_test)} test apples in {time.perf_counter() - began:.0f} s"
    )
    for seed in range(args.seeds):
        start = np.random.default_rng(seed).choice(len(x), args.start, replace=False)
        for strategy in STRATEGIES:
            curve = run_arm(
                strategy, x, y, x_test, y_test, start, args.step, args.rounds, args.frr, seed
            )
            curves[strategy.value].append(curve)
            print(f"seed {seed} {strategy.value:12s} " + " ".join(f"{r:.2f}" for r in curve))
    means = {name: np.mean(c, axis=0) for name, c in curves.items()}
    target = float(means["random"][-1])
    random_labels = counts[-1]
    summary, rows = {}, []
    for name, mean in means.items():
        needed = labels_to_reach(mean, target, counts)
        saving = None if needed is None else 1 - needed / random_labels
        summary[name] = {
            "recall_mean": [round(float(v), 4) for v in mean],
            "recall_std": [round(float(v), 4) for v in np.std(curves[name], axis=0)],
            "labels_to_reach_random_final": needed,
            "label_saving": None if saving is None else round(saving, 3),
        }
        if name != "random":
            rows.append(
                {
                    "benchmark": "active_learning",
                    "measure": f"labels to reach random's recall@{args.frr:.0%}FRR "
                    f"({target:.1%} at {random_labels})",
                    "visionline": f"{name}: {needed if needed else f'> {random_labels}'} labels",
                    "peer": f"random: {random_labels} labels",
                    "result": f"{saving:.0%} fewer" if saving is not None else "not reached",
                }
            )
        print(f"{name:12s} final {mean[-1]:.3f}  labels to reach {target:.3f}: {needed}")
    if args.dry_run:
        return
    path = write_result(
        "active_learning",
        {
            "setup": {
                **vars(args),
                "label_counts": counts,
                "model": "LogisticRegression (balanced) on "
                "frozen ImageNet EfficientNet-Lite0 features, PCA to --dims",
                "seconds": round(time.perf_counter() - began, 1),
            },
            "random_final_recall": round(target, 4),
            "strategies": summary,
            "readme": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
