"""Edge: a fine-tuned model's speed and accuracy as PyTorch eager, ONNX FP32 and ONNX INT8.

efficientnet_lite0 is fine-tuned from the offline ImageNet weights with visionline's own training
loop (`train.fit`) on synthetic apples (`visionline.synth`, good + five defect subtypes) at a small
image size, so the run takes minutes on a CPU. The dataset is split 50/25/25 into train/val/test:
the FP32 model's threshold is set on val (the lowest that flags at most 2 % of the good val
apples, as the export step sets it) and both precisions are scored on test with that one
threshold, as the deployed bundle uses it. Reported: test defect recall and false-reject rate for
FP32 and INT8 with exact 95 % intervals, and the INT8 - FP32 change with a paired bootstrap
interval over the test images plus the count of apples whose verdict flipped, next to the speed-up.
INT8's own val threshold is reported too (what re-fitting the threshold would give).

Speed: batch 1, 2 threads, backends timed in 60 rounds of 5 runs each in one process, in an order
that rotates; a speed-up is the median of the per-round ratios of median latencies. Neither ONNX
Runtime's nor PyTorch's (OpenMP) threads spin while idle, so one backend's idle threads do not
steal the cores from the one being timed. A profiled pass splits FP32 and INT8 kernel time by convolution kind, which shows
where INT8 gains (1×1 convolutions) and where it does not (depthwise, the 3-channel stem).
INT8 is what export ships: `search_int8` (class-stratified calibration images, MinMax/Entropy/
Percentile measured on them, sensitive node groups kept float), judged by the paired gate
(McNemar on the flips) on the test images, which calibration never saw.

OpenVINO runs beside ONNX Runtime on the same models, images and threads (extra `openvino`):
FP32 from the same ONNX file, "INT8 (ORT QDQ)" = the same QDQ file ONNX Runtime runs, and
"INT8 (NNCF)" = NNCF's post-training quantisation of the FP32 model on the same calibration
images (plain `nncf.quantize`; its accuracy-controlled variant is not run here).
Targets: INT8 ≥ 1.6× faster than ONNX FP32 with ≤ 1 pp recall loss; ONNX FP32 ≥ 2× faster than eager.
Run: .venv/bin/python benchmarks/edge.py [--images 2000] [--size 128] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# PyTorch's OpenMP threads sleep while idle, as ONNX Runtime's do (spinning off): on a shared
# machine spinning threads made eager 2-9x slower in a probe, which would flatter ONNX Runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from _record import uncommitted_code, write_result

from visionline.config import Project, dump_config, init_project, parse_config
from visionline.data import DatasetRepo
from visionline.evaluate import bootstrap_ci, clopper_pearson, threshold_for_false_reject_rate
from visionline.export._gate import compare_decisions, operating_metrics
from visionline.export._onnx import _wrapper, export_onnx, onnx_predict, onnx_session
from visionline.export._quantize import Calibration, search_int8, stratified_indices
from visionline.preprocessing import decode_image
from visionline.synth import SynthConfig, generate_dataset
from visionline.train import TrainConfig, fit, load_model
from visionline.train._data import split_labels

THREADS, TARGET_FRR, DEFECT_RATE = 2, 0.02, 0.35


def fine_tune(tmp: Path, args: argparse.Namespace) -> tuple[object, object, DatasetRepo, object, dict]:
    """Synthesise, ingest, split and fine-tune; the model, its spec, the repo, the split version."""
    path = init_project(tmp / "apples", name="edge-bench")
    config = parse_config(path.read_text())
    goals = config.goals.model_copy(update={"max_false_reject_rate": TARGET_FRR})
    path.write_text(dump_config(config.model_copy(update={"goals": goals})))
    project = Project.load(tmp / "apples")
    repo = DatasetRepo(project)
    synth = SynthConfig(size=args.size, seed=7, defect_rate=DEFECT_RATE)
    generate_dataset(synth, tmp / "synth", args.images)
    added = repo.add(tmp / "synth", name="synth-apples").version
    version = repo.split(added.id, val=0.25, test=0.25, seed=0)
    train = TrainConfig(
        backbone="efficientnet_lite0", pretrained="imagenet", epochs=args.epochs, lr=3e-3,
        backbone_lr_mult=0.3, freeze_epochs=1, image_size=args.size, batch_size=32,
        device="cpu", patience=args.epochs, augment=0.2, seed=0,
    )
    started = time.perf_counter()
    result = fit(train, version, project, out_dir=tmp / "train",
                 tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", progress=False)
    model, spec = load_model(result.model_path)
    recipe = {
        **train.model_dump(mode="json", include={"backbone", "pretrained", "epochs", "lr", "backbone_lr_mult",
                                                 "freeze_epochs", "image_size", "batch_size", "augment", "seed"}),
        "best_epoch": result.best_epoch, "train_s": round(time.perf_counter() - started, 1),
    }
    return model, spec, repo, version, recipe


def split_arrays(repo: DatasetRepo, version, split: str, spec) -> tuple[np.ndarray, np.ndarray]:
    """A split's images through the deployed path (decode + the model's preprocessing) and labels."""
    records, labels = split_labels(version, split, spec.class_names)
    return spec.preprocessing([decode_image(repo.blobs.get(r.sha256)) for r in records]), labels


def _with_intervals(metrics: dict) -> dict:
    """Operating metrics plus exact (Clopper-Pearson) 95 % intervals for recall and FRR."""
    n_good, n_defect = metrics["n_good"], metrics["n_defect"]
    recall_k = round(metrics["defect_recall"] * n_defect)
    frr_k = round(metrics["false_reject_rate"] * n_good)
    return {**metrics, "detected": recall_k, "false_rejects": frr_k,
            "defect_recall_ci95": list(clopper_pearson(recall_k, n_defect)),
            "false_reject_rate_ci95": list(clopper_pearson(frr_k, n_good))}


def accuracy(scores: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray], resamples: int) -> dict:
    """FP32 threshold from val, both precisions on test, the paired change with its interval."""
    val_defect, test_defect = labels["val"] != 0, labels["test"] != 0
    threshold = threshold_for_false_reject_rate(scores["fp32"]["val"][~val_defect], TARGET_FRR)
    out: dict = {"threshold_from": f"FP32 val scores, at most {TARGET_FRR:.0%} of good val apples flagged",
                 "threshold": float(threshold)}
    flags = {}
    for precision in ("fp32", "int8"):
        out[precision] = {
            "val": operating_metrics(scores[precision]["val"], val_defect, threshold),
            "test": _with_intervals(operating_metrics(scores[precision]["test"], test_defect, threshold)),
        }
        flags[precision] = scores[precision]["test"] > threshold

    def change(idx: np.ndarray, on_defects: bool) -> float:
        keep = idx[test_defect[idx] == on_defects]
        if keep.size == 0:
            return float("nan")
        return 100 * float(flags["int8"][keep].mean() - flags["fp32"][keep].mean())

    n = len(test_defect)
    good = ~test_defect
    out["int8_minus_fp32_test"] = {
        "defect_recall_pp": 100 * (out["int8"]["test"]["defect_recall"] - out["fp32"]["test"]["defect_recall"]),
        "defect_recall_pp_ci95": list(bootstrap_ci(lambda i: change(i, True), n, resamples=resamples)),
        "false_reject_rate_pp": 100 * (out["int8"]["test"]["false_reject_rate"] - out["fp32"]["test"]["false_reject_rate"]),
        "false_reject_rate_pp_ci95": list(bootstrap_ci(lambda i: change(i, False), n, resamples=resamples)),
        "good_apples_newly_rejected_by_int8": int((flags["int8"] & ~flags["fp32"] & good).sum()),
        "good_apples_no_longer_rejected_by_int8": int((~flags["int8"] & flags["fp32"] & good).sum()),
        "defects_newly_missed_by_int8": int((~flags["int8"] & flags["fp32"] & test_defect).sum()),
        "defects_newly_caught_by_int8": int((flags["int8"] & ~flags["fp32"] & test_defect).sum()),
        "interval": f"paired percentile bootstrap over test images, {resamples} resamples; the val threshold is held fixed",
    }
    own = threshold_for_false_reject_rate(scores["int8"]["val"][~val_defect], TARGET_FRR)
    out["int8_own_val_threshold"] = _with_intervals(operating_metrics(scores["int8"]["test"], test_defect, own))
    return out


def _kernel_events(paths: dict[str, Path], one: np.ndarray, runs: int) -> dict[str, list[dict]]:
    """ONNX Runtime's per-node kernel-time events over `runs` batch-1 runs of each model, the
    models taking turns run by run so that load from other processes hits them alike."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, path in paths.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = THREADS
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / name)
            sessions[name] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        for _ in range(runs):
            for session in sessions.values():
                session.run(None, {"image": one})
        events = {
            name: json.loads(Path(session.end_profiling()).read_text())
            for name, session in sessions.items()
        }
    return {
        name: [e for e in evs if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        for name, evs in events.items()
    }


def _conv_kind(in_channels: int, out_channels: int) -> str:
    if in_channels == 3:
        return "conv stem 3×3 (3 channels in)"
    if in_channels == out_channels:
        return "conv depthwise"
    return "conv 1×1 expand / head" if out_channels > in_channels else "conv 1×1 project"


def conv_profile(fp32: Path, int8: Path, one: np.ndarray, runs: int) -> dict[str, dict]:
    """Kernel ms per run by convolution kind, FP32 vs INT8 (each layer's median over the runs).

    Both graphs run their 49 convolutions in the same order (FP32 as NCHWc Conv, INT8 as NHWC
    QLinearConv), so the k-th convolution of each is the same layer; the FP32 shapes (channels
    on axis 1) name its kind. Everything else (quantise, transposes, adds, pool, head) is "other".
    """
    per_layer: dict[str, list[float]] = {}
    other: dict[str, float] = {}
    kinds_by_layer: list[str] = []
    for name, events in _kernel_events({"fp32": fp32, "int8": int8}, one, runs).items():
        is_conv = [e["args"]["op_name"] in ("Conv", "QLinearConv") for e in events]
        convs = [e for e, conv in zip(events, is_conv) if conv]
        layers, per_run = len(convs) // runs, len(events) // runs
        # medians over runs, so a run slowed by another process does not skew a layer's time
        per_layer[name] = [float(np.median([e["dur"] for e in convs[k::layers]])) * runs for k in range(layers)]
        other[name] = float(np.median([
            sum(e["dur"] for e, conv in zip(events[j * per_run:(j + 1) * per_run], is_conv[j * per_run:]) if not conv)
            for j in range(runs)
        ])) * runs
        if name == "fp32":
            for event in convs[:layers]:
                in_shape = next(iter(event["args"]["input_type_shape"][0].values()))
                out_shape = next(iter(event["args"]["output_type_shape"][0].values()))
                kinds_by_layer.append(_conv_kind(in_shape[1], out_shape[1]))
    if len(per_layer["fp32"]) != len(per_layer["int8"]):
        return {"note": "FP32 and INT8 run different numbers of convolutions (float groups fused differently); layers not paired"}
    kinds: dict[str, dict[str, float]] = {}
    for k, kind in enumerate(kinds_by_layer):
        row = kinds.setdefault(kind, {"fp32": 0.0, "int8": 0.0})
        for name in ("fp32", "int8"):
            row[name] += per_layer[name][k] / runs / 1000
    kinds["other"] = {name: other[name] / runs / 1000 for name in ("fp32", "int8")}
    kinds["total"] = {n: sum(r[n] for r in kinds.values()) for n in ("fp32", "int8")}
    for row in kinds.values():
        row["speedup"] = row["fp32"] / row["int8"]
    return kinds


def latencies(backends: dict, rounds: int, runs: int) -> dict[str, list[list[float]]]:
    """Batch-1 milliseconds per backend and round: in every round each backend runs `runs` times,
    in an order that rotates, so the backends compared ran seconds apart under the same load."""
    names = list(backends)
    times: dict[str, list[list[float]]] = {k: [] for k in backends}
    with torch.inference_mode():
        for fn in backends.values():
            for _ in range(5):
                fn()
        for r in range(rounds):
            shift = r % len(names)
            for key in names[shift:] + names[:shift]:
                block = []
                for _ in range(runs):
                    start = time.perf_counter()
                    backends[key]()
                    block.append((time.perf_counter() - start) * 1000)
                times[key].append(block)
    return times


def onnx_backends(model, fp32: Path, int8: Path, one: np.ndarray) -> dict:
    wrapped = _wrapper(model, 1.0)
    sessions = {name: onnx_session(path, THREADS, spinning=False) for name, path in (("onnx_fp32", fp32), ("onnx_int8", int8))}
    return {
        "pytorch_eager": lambda: wrapped(torch.from_numpy(one)),
        "onnx_fp32": lambda: sessions["onnx_fp32"].run(None, {"image": one}),
        "onnx_int8": lambda: sessions["onnx_int8"].run(None, {"image": one}),
    }


def openvino_models(fp32: Path, int8: Path, calibration: np.ndarray) -> tuple[dict, dict]:
    """Compiled OpenVINO models (dynamic batch, for scoring) and the models themselves: FP32, the
    ORT QDQ INT8 file, and NNCF's own INT8, all on `THREADS` threads with f32 inference precision
    (so FP32 is not silently run in bf16)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise SystemExit(f"OpenVINO side by side needs the extra: pip install 'visionline[openvino]' ({exc}).") from exc
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    nncf_int8 = nncf.quantize(core.read_model(str(fp32)), dataset, subset_size=len(calibration))
    models = {"openvino_fp32": core.read_model(str(fp32)), "openvino_int8_qdq": core.read_model(str(int8)),
              "openvino_int8_nncf": nncf_int8}
    return {name: core.compile_model(model, "CPU", config) for name, model in models.items()}, models


def openvino_batch1(models: dict, size: int) -> dict:
    """The same models reshaped to a static batch-1 input for timing: OpenVINO runs a dynamic
    batch dimension markedly slower (20 vs 12 ms in a probe at 128 px), ONNX Runtime does not."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    compiled = {}
    for name, model in models.items():
        static = model.clone()
        static.reshape([1, 3, size, size])
        compiled[name] = core.compile_model(static, "CPU", config)
    return compiled


def openvino_scores(compiled, images: np.ndarray) -> np.ndarray:
    request = compiled.create_infer_request()
    out = []
    for start in range(0, len(images), 32):
        result = request.infer({0: images[start : start + 32]})
        out.append(result[compiled.output("probabilities")])
    return 1 - np.concatenate(out)[:, 0]


def speedups(times: dict[str, list[list[float]]]) -> dict[str, dict]:
    """Median and spread of the per-round ratios of median latencies (a burst of load from other
    processes spoils a round, not the median), and the ratio of the pooled medians."""
    def ratio(slow: str, fast: str) -> dict:
        per_round = [np.median(a) / np.median(b) for a, b in zip(times[slow], times[fast])]
        pooled = np.median(np.concatenate(times[slow])) / np.median(np.concatenate(times[fast]))
        return {"median_of_rounds": float(np.median(per_round)), "rounds_q25_q75": [float(q) for q in np.percentile(per_round, [25, 75])],
                "of_pooled_p50": float(pooled)}

    pairs = {"onnx_fp32_vs_pytorch": ("pytorch_eager", "onnx_fp32"), "onnx_int8_vs_fp32": ("onnx_fp32", "onnx_int8"),
             "openvino_fp32_vs_onnx_fp32": ("onnx_fp32", "openvino_fp32"),
             "openvino_int8_qdq_vs_onnx_int8": ("onnx_int8", "openvino_int8_qdq"),
             "openvino_int8_nncf_vs_onnx_int8": ("onnx_int8", "openvino_int8_nncf"),
             "openvino_int8_nncf_vs_openvino_fp32": ("openvino_fp32", "openvino_int8_nncf")}
    return {name: ratio(*pair) for name, pair in pairs.items() if set(pair) <= set(times)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def readme_rows(result: dict) -> list[dict[str, str]]:
    lat, acc = result["latency_ms"], result["accuracy"]
    f, i, d = acc["fp32"]["test"], acc["int8"]["test"], acc["int8_minus_fp32_test"]
    size = result["recipe"]["image_size"]
    q, g, sp, ov = result["quantisation"], result["paired_gate_test"], result["speedups"], result["openvino"]

    def ci(pair: list[float], scale: float = 100) -> str:
        return f"[{scale * pair[0]:.1f}, {scale * pair[1]:.1f}]"

    return [
        {"benchmark": "edge", "measure": f"batch-1 p50 latency, fine-tuned efficientnet_lite0 @{size}px, 2 threads",
         "visionline": f"ONNX INT8 {lat['onnx_int8']['p50']:.1f} ms",
         "peer": f"ONNX FP32 {lat['onnx_fp32']['p50']:.1f} ms · PyTorch eager {lat['pytorch_eager']['p50']:.1f} ms",
         "result": f"INT8 {result['ratios']['onnx_int8_vs_fp32_p50']:.2f}x FP32; FP32 {result['ratios']['onnx_fp32_vs_pytorch_p50']:.2f}x eager"},
        {"benchmark": "edge", "measure": f"test defect recall, threshold set on val at {TARGET_FRR:.0%} FRR (n={f['n_defect']})",
         "visionline": f"INT8 {_pct(i['defect_recall'])} {ci(i['defect_recall_ci95'])}",
         "peer": f"FP32 {_pct(f['defect_recall'])} {ci(f['defect_recall_ci95'])}",
         "result": f"{d['defect_recall_pp']:+.1f} pp {ci(d['defect_recall_pp_ci95'], 1)}"},
        {"benchmark": "edge", "measure": f"test false-reject rate, same threshold (n={f['n_good']} good)",
         "visionline": f"INT8 {_pct(i['false_reject_rate'])} {ci(i['false_reject_rate_ci95'])}",
         "peer": f"FP32 {_pct(f['false_reject_rate'])} {ci(f['false_reject_rate_ci95'])}",
         "result": f"{d['false_reject_rate_pp']:+.1f} pp {ci(d['false_reject_rate_pp_ci95'], 1)}"},
        {"benchmark": "edge", "measure": "INT8 paired gate on test (McNemar on flipped decisions)",
         "visionline": f"INT8 ({q['method']}, {len(q['float_groups'])} block(s) float)",
         "peer": "FP32, same images and threshold",
         "result": f"recall p={g['recall']['mcnemar_p_value']:.2g}, false rejects p={g['false_rejects']['mcnemar_p_value']:.2g}: "
                   + ("passed" if g["passed"] else "refused")},
        {"benchmark": "edge", "measure": f"batch-1 p50 latency, OpenVINO vs ONNX Runtime, same model @{size}px, 2 threads",
         "visionline": f"ORT INT8 {lat['onnx_int8']['p50']:.1f} ms · ORT FP32 {lat['onnx_fp32']['p50']:.1f} ms",
         "peer": f"OpenVINO FP32 {lat['openvino_fp32']['p50']:.1f} ms · INT8 (same QDQ) {lat['openvino_int8_qdq']['p50']:.1f} ms · "
                 f"INT8 (NNCF) {lat['openvino_int8_nncf']['p50']:.1f} ms",
         "result": f"OV NNCF INT8 {sp['openvino_int8_nncf_vs_onnx_int8']['median_of_rounds']:.2f}x ORT INT8; "
                   f"OV FP32 {sp['openvino_fp32_vs_onnx_fp32']['median_of_rounds']:.2f}x ORT FP32; "
                   f"NNCF test recall {100 * ov['openvino_int8_nncf']['vs_onnx_fp32_test']['recall']['change']:+.1f} pp vs ORT FP32"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000, help="synthetic apples, split 50/25/25")
    parser.add_argument("--size", type=int, default=128, help="image size for training and inference")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5, help="runs of each backend per round")
    parser.add_argument("--profile-runs", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples for the change intervals")
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="a tiny run to check the set-up; writes nothing")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.epochs, args.rounds, args.runs, args.profile_runs, args.bootstrap = 200, 1, 3, 2, 3, 50
    elif dirty := uncommitted_code():
        raise SystemExit("Commit these files before a recorded run: " + ", ".join(dirty))
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model, spec, repo, version, recipe = fine_tune(tmp, args)
        print(f"fine-tuned in {recipe['train_s']} s (best epoch {recipe['best_epoch']})", flush=True)
        x = {s: split_arrays(repo, version, s, spec) for s in ("train", "val", "test")}
        fp32 = export_onnx(model, args.size, tmp / "model.onnx")
        val_defect, test_defect = x["val"][1] != 0, x["test"][1] != 0
        fp32_val = 1 - onnx_predict(fp32, x["val"][0])[0][:, 0]
        threshold = threshold_for_false_reject_rate(fp32_val[~val_defect], TARGET_FRR)
        train_classes = [spec.class_names[k] for k in x["train"][1]]
        picked = stratified_indices(train_classes, args.calibration_images, seed=0)
        calibration = x["train"][0][picked]
        started = time.perf_counter()
        choice = search_int8(fp32, tmp / "model.int8.onnx", calibration, [train_classes[i] for i in picked],
                             threshold, Calibration.AUTO, tolerance=0.01)
        search_s = time.perf_counter() - started
        int8 = tmp / "model.int8.onnx"
        print(f"INT8 search {search_s:.0f} s: {choice.method}, float groups {choice.float_groups}", flush=True)
        scores = {
            name: {s: 1 - onnx_predict(path, x[s][0])[0][:, 0] for s in ("val", "test")}
            for name, path in (("fp32", fp32), ("int8", int8))
        }
        acc = accuracy(scores, {s: x[s][1] for s in ("val", "test")}, args.bootstrap)
        gate = compare_decisions("INT8", scores["fp32"]["test"], scores["int8"]["test"], test_defect,
                                 acc["threshold"], 0.01, split="test")
        ov, ov_models = openvino_models(fp32, int8, calibration)
        openvino = {}
        for name, compiled in ov.items():
            test_scores = openvino_scores(compiled, x["test"][0])
            vs = compare_decisions(name, scores["fp32"]["test"], test_scores, test_defect, acc["threshold"], 0.01, split="test")
            openvino[name] = {
                "test": _with_intervals(operating_metrics(test_scores, test_defect, acc["threshold"])),
                "vs_onnx_fp32_test": vs.to_dict(),
                "max_abs_score_diff_vs_onnx_same_precision": float(np.abs(
                    test_scores - scores["int8" if "int8" in name else "fp32"]["test"]).max()),
            }
        sizes = {"onnx_fp32": fp32.stat().st_size, "onnx_int8": int8.stat().st_size}
        one = x["test"][0][:1]
        backends = onnx_backends(model, fp32, int8, one)
        requests = {name: compiled.create_infer_request() for name, compiled in openvino_batch1(ov_models, args.size).items()}
        for name, request in requests.items():
            backends[name] = lambda request=request: request.infer({0: one})
        times = latencies(backends, args.rounds, args.runs)
        profile = conv_profile(fp32, int8, one, args.profile_runs)
        counts = {s: len(x[s][1]) for s in x}

    latency = {k: {"p50": float(np.percentile(np.concatenate(v), 50)), "p95": float(np.percentile(np.concatenate(v), 95)),
                   "runs": sum(map(len, v))} for k, v in times.items()}
    speed = speedups(times)
    ratios = {
        "onnx_fp32_vs_pytorch_p50": speed["onnx_fp32_vs_pytorch"]["median_of_rounds"],
        "onnx_int8_vs_fp32_p50": speed["onnx_int8_vs_fp32"]["median_of_rounds"],
    }
    change = acc["int8_minus_fp32_test"]
    result = {
        "model": f"efficientnet_lite0 @{args.size}px fine-tuned from the offline ImageNet weights with visionline.train.fit",
        "data": f"synthetic apples (visionline.synth, seed 7, {DEFECT_RATE:.0%} defects in 5 subtypes): {counts}",
        "recipe": recipe,
        "threads": THREADS,
        "batch": 1,
        "timing": f"interleaved rounds in one process; ONNX Runtime spinning off and OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} for PyTorch, so idle threads of one backend do not steal the cores from another",
        "int8": f"static QDQ, per-channel symmetric int8 weights, uint8 activations, search_int8 on {args.calibration_images} class-stratified train images (method and float groups measured); head + softmax kept float",
        "quantisation": {**choice.to_dict(), "search_s": round(search_s, 1)},
        "paired_gate_test": gate.to_dict(),
        "openvino": openvino,
        "latency_ms": latency,
        "ratios": ratios,
        "speedups": speed,
        "sizes_bytes": sizes,
        "profile_ms_per_run": profile,
        "accuracy": acc,
        "targets": {
            "int8_vs_fp32_ge_1.6": ratios["onnx_int8_vs_fp32_p50"] >= 1.6,
            "test_recall_loss_le_1pp": -change["defect_recall_pp"] <= 1.0,
            "fp32_vs_eager_ge_2": ratios["onnx_fp32_vs_pytorch_p50"] >= 2.0,
            "no_significant_frr_change": not gate.frr_rise_significant,
        },
    }
    for key, value in latency.items():
        print(f"{key:14s} p50 {value['p50']:7.2f} ms  p95 {value['p95']:7.2f} ms")
    print(f"ONNX FP32 vs PyTorch eager: {ratios['onnx_fp32_vs_pytorch_p50']:.2f}×  (target ≥ 2) {speed['onnx_fp32_vs_pytorch']}")
    print(f"ONNX INT8 vs ONNX FP32:     {ratios['onnx_int8_vs_fp32_p50']:.2f}×  (target ≥ 1.6) {speed['onnx_int8_vs_fp32']}")
    for precision in ("fp32", "int8"):
        t = acc[precision]["test"]
        print(f"test {precision}: recall {t['defect_recall']:.3f} {t['defect_recall_ci95']}, "
              f"FRR {t['false_reject_rate']:.3f} {t['false_reject_rate_ci95']}")
    print("INT8 - FP32 on test:", json.dumps(change))
    print(gate.message())
    for name, row in openvino.items():
        print(f"{name}: test recall {row['test']['defect_recall']:.3f}, FRR {row['test']['false_reject_rate']:.3f}; "
              f"{row['vs_onnx_fp32_test']['message']}")
    for name, value in speed.items():
        print(f"{name}: {value['median_of_rounds']:.2f}×")
    print("ORT profile, kernel ms per run:", json.dumps(profile))
    result["readme"] = readme_rows(result)
    for row in result["readme"]:
        print(" | ".join(row.values()))
    if args.smoke:
        return
    print("wrote", write_result("edge", result))


if __name__ == "__main__":
    main()
