"""Structured pruning: a fine-tuned model against the same model with channels removed, side by side.

The unpruned model is `benchmarks/edge.py`'s: efficientnet_lite0 fine-tuned from the offline
ImageNet weights with `train.fit` on synthetic apples, split 50/25/25. Each pruned variant starts
from that model and loses `ratio` of the hidden channels of every inverted-residual block
(torch-pruning, channel counts rounded to 8; the stem, the residual stream, the embedding and the
head keep their shapes):
- `magnitude`: the channels with the smallest weights (L2 group magnitude), nothing else: what
  pruning alone does to the model;
- `recovered` (what `visionline export --prune R` ships): the channels that contribute least to
  their block's output on `--calib-images` train images go, and `prune.recover` refits each
  block's projection and the embedding convolution by least squares to reproduce the unpruned
  model's outputs on those images (no labels, no gradient steps).

Each model's threshold is set on its own val scores (at most 2 % of good val apples flagged, as
export does); recall and false-reject rate are scored on test with exact 95 % intervals.
Speed: ONNX FP32 at batch 1 on 2 threads, all models timed in the same rounds in a rotating order
(`edge.latencies`), a speed-up being the median of the per-round ratios of median latencies.
MACs: torch-pruning's op counter at batch 1.
Targets (issue 18): ≥ 30 % fewer MACs, ≥ 1.2× faster, ≤ 1 pp recall loss at the budget.

    .venv/bin/python benchmarks/prune.py [--images 800] [--size 128] [--epochs 3]
        [--ratios 0.35 0.4] [--calib-images 400] [--rounds 30]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _record import write_result

from edge import TARGET_FRR, THREADS, _with_intervals, fine_tune, latencies, speedups, split_arrays
from visionline.evaluate import threshold_for_false_reject_rate
from visionline.export._data import load_split
from visionline.export._gate import operating_metrics
from visionline.export._onnx import export_onnx, onnx_predict, onnx_session
from visionline.export._prune import count_macs, count_params, prune_channels, recover


def score(session, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Threshold from this model's val scores at the false-reject goal; test metrics with CIs."""
    scores = {split: 1 - onnx_predict(session, images[split])[0][:, 0] for split in ("val", "test")}
    threshold = threshold_for_false_reject_rate(scores["val"][labels["val"] == 0], TARGET_FRR)
    test_defect = labels["test"] != 0
    return {
        "threshold": float(threshold),
        "val": operating_metrics(scores["val"], labels["val"] != 0, threshold),
        "test": _with_intervals(operating_metrics(scores["test"], test_defect, threshold)),
        "test_flags": scores["test"] > threshold,
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model, spec, repo, version, recipe = fine_tune(tmp, args)
        prep, size = spec.preprocessing, spec.preprocessing.size
        images, labels = {}, {}
        for split in ("val", "test"):
            images[split], labels[split] = split_arrays(repo, version, split, spec)
        train = load_split(version, repo.blobs, "train", prep)

        models: dict[str, torch.nn.Module] = {"unpruned": model.eval()}
        calib = train.pixels[
            np.random.default_rng(0).permutation(len(train))[: args.calib_images]
        ]
        prune_s: dict[str, float] = {}
        recovery: dict[str, dict[str, float]] = {}
        for ratio in args.ratios:
            for variant in ("magnitude", "recovered"):
                name = f"pruned_{round(ratio * 100)}_{variant}"
                started = time.perf_counter()
                if variant == "magnitude":
                    pruned = prune_channels(copy.deepcopy(model), size, ratio)
                else:
                    pruned = prune_channels(
                        copy.deepcopy(model), size, ratio, pixels=calib, preprocessing=prep
                    )
                    recovery[name] = recover(pruned, model, prep, calib)
                prune_s[name] = round(time.perf_counter() - started, 1)
                models[name] = pruned.eval()
                print(f"{name}: pruned in {prune_s[name]} s {recovery.get(name, '')}", flush=True)

        torch.set_num_threads(THREADS)
        one = np.zeros((1, 3, size, size), np.float32)
        rows, sessions = {}, {}
        for name, m in models.items():
            path = export_onnx(m, size, tmp / f"{name}.onnx", spec.temperature)
            sessions[name] = onnx_session(path, THREADS, spinning=False)
            rows[name] = {
                "ratio": 0.0 if name == "unpruned" else float(name.split("_")[1]) / 100,
                "variant": name.split("_")[-1] if name != "unpruned" else "unpruned",
                "params": count_params(m),
                "macs": count_macs(m, size),
                "onnx_bytes": path.stat().st_size,
                **score(sessions[name], images, labels),
            }
        backends = {name: (lambda s=s: s.run(None, {"image": one})) for name, s in sessions.items()}
        times = latencies(backends, args.rounds, 5)

    base = rows["unpruned"]
    base_flags = base.pop("test_flags")
    test_defect = labels["test"] != 0
    for name, row in rows.items():
        row["latency_ms_p50"] = float(np.median(np.concatenate(times[name])))
        row["latency_ms_p95"] = float(np.percentile(np.concatenate(times[name]), 95))
        if name == "unpruned":
            continue
        flags = row.pop("test_flags")
        pair = speedups({"onnx_fp32": times["unpruned"], "onnx_int8": times[name]})
        row["vs_unpruned"] = {
            "macs_reduction": 1 - row["macs"] / base["macs"],
            "params_reduction": 1 - row["params"] / base["params"],
            "speedup": pair["onnx_int8_vs_fp32"],
            "test_defect_recall_pp": 100 * (row["test"]["defect_recall"] - base["test"]["defect_recall"]),
            "test_false_reject_rate_pp": 100
            * (row["test"]["false_reject_rate"] - base["test"]["false_reject_rate"]),
            "defects_newly_missed": int((~flags & base_flags & test_defect).sum()),
            "defects_newly_caught": int((flags & ~base_flags & test_defect).sum()),
        }
        got = row["vs_unpruned"]
        row["targets_met"] = {
            "macs_30pct_fewer": got["macs_reduction"] >= 0.30,
            "speedup_1_2x": got["speedup"]["median_of_rounds"] >= 1.2,
            "recall_loss_le_1pp": got["test_defect_recall_pp"] >= -1.0,
        }
    return {
        "benchmark": "prune",
        "model": "efficientnet_lite0 fine-tuned on synthetic apples (benchmarks/edge.py's recipe)",
        "data": {"images": args.images, "size": size, "split": "50/25/25", "dataset_version": version.id,
                 "n_test": len(labels["test"]), "n_test_defects": int(test_defect.sum())},
        "recipe": recipe,
        "pruning": {"scope": "hidden channels of inverted-residual blocks (torch-pruning BasePruner, round_to=8)",
                    "magnitude": "GroupMagnitudeImportance(p=2), no recovery",
                    "recovered": "channels by contribution on the calibration images, then least-squares "
                                 "refit of each block's projection and of conv_head (prune.recover)",
                    "calib_images": len(calib), "prune_s": prune_s,
                    "relative_error_of_refitted_layers": recovery},
        "threads": THREADS,
        "max_false_reject_rate": TARGET_FRR,
        "timing": {"rounds": args.rounds, "runs_per_round": 5, "batch": 1, "runtime": "onnxruntime FP32"},
        "models": rows,
    }


def readme_rows(result: dict) -> list[dict[str, str]]:
    base = result["models"]["unpruned"]
    out = []
    for name, row in result["models"].items():
        if name == "unpruned":
            continue
        got = row["vs_unpruned"]
        out.append({
            "benchmark": "prune",
            "measure": f"{row['ratio']:.0%} of hidden channels pruned ("
            + ("least-squares recovery on "
               f"{result['pruning']['calib_images']} train images" if row["variant"] == "recovered"
               else "weight magnitude, no recovery")
            + f"), lite0 @{result['data']['size']}px, "
            f"ONNX batch 1, {result['threads']} threads; test recall at ≤ {result['max_false_reject_rate']:.0%} FRR",
            "visionline": f"{row['macs'] / 1e6:.0f} MMACs, {row['latency_ms_p50']:.2f} ms, "
            f"recall {row['test']['defect_recall']:.3f}",
            "peer": f"unpruned: {base['macs'] / 1e6:.0f} MMACs, {base['latency_ms_p50']:.2f} ms, "
            f"recall {base['test']['defect_recall']:.3f}",
            "result": f"{got['macs_reduction']:.0%} fewer MACs, "
            f"{got['speedup']['median_of_rounds']:.2f}× faster, {got['test_defect_recall_pp']:+.1f} pp recall",
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of the unpruned model")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.35, 0.4])
    parser.add_argument("--calib-images", type=int, default=400, help="train images for recovery")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    result = run(args)
    result["readme"] = readme_rows(result)
    for name, row in result["models"].items():
        extra = row.get("vs_unpruned", {})
        print(f"{name}: {row['macs'] / 1e6:.1f} MMACs, {row['latency_ms_p50']:.2f} ms p50, test recall "
              f"{row['test']['defect_recall']:.3f} FRR {row['test']['false_reject_rate']:.3f} "
              f"{ {k: v for k, v in extra.items() if k != 'speedup'} } "
              f"speed-up {extra.get('speedup', {}).get('median_of_rounds', 1.0):.2f}")
    print(f"wrote {write_result('prune', result)}")


if __name__ == "__main__":
    main()
