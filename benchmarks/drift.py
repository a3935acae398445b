"""Drift detection on the synthetic line: detection delay per drift and false alarms when stationary.

Model: offline-ImageNet efficientnet_lite0 embeddings (64 px) + a fitted logistic-regression head
(multinomial over good + defect subtypes), calibrated on a held-out validation split that also
becomes the drift reference. Visionline's monitor (4 detectors, Holm across them, persistence 2)
runs side by side with the common baseline: a KS test on the defect score per window at
alpha = 0.05, no correction, alarm on the first significant window.

    .venv/bin/python benchmarks/drift.py [--stationary 20000] [--out benchmarks/results/drift.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from visionline.evaluate import threshold_for_false_reject_rate
from visionline.monitor import DriftConfig, DriftMonitor, Reference, image_quality
from visionline.preprocessing import Preprocessing
from visionline.synth import Drift, Subtype, SynthConfig, SynthLine
from visionline.synth import DriftConfig as SynthDrift
from visionline.train import ModelSpec, build_model, load_pretrained
from visionline.train._backbones import normalization_for

SIZE = 64
CLASSES = ["good", *(s.value for s in Subtype)]
DEFECT_RATE = 0.1
DRIFT_START = 1000
DRIFT_LENGTH = 1500


class Line:
    """Render a stream and run the frozen backbone on it in batches."""

    def __init__(self) -> None:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        mean, std = normalization_for("efficientnet_lite0", "imagenet")
        self.prep = Preprocessing(size=SIZE, mean=mean, std=std)
        spec = ModelSpec("efficientnet_lite0", CLASSES, self.prep, pretrained="imagenet")
        self.model = build_model(spec).eval()
        load_pretrained(self.model.backbone, "efficientnet_lite0", "imagenet")

    def stream(self, config: SynthConfig, stream: int, start: int, n: int, seed: int, rates=None):
        """Embeddings, quality and labels of images start..start+n (and pixels when `rates` given)."""
        line = SynthLine(config, stream=stream)
        rng = np.random.default_rng(seed)
        labels, pixels = [], []
        for index in range(start, start + n):
            subtype = None
            if rng.random() < (DEFECT_RATE if rates is None else rates[index - start]):
                subtype = list(Subtype)[int(rng.integers(len(Subtype)))]
            pixels.append(line.render(index, subtype).pixels)
            labels.append(0 if subtype is None else CLASSES.index(subtype.value))
        pixels = np.stack(pixels)
        embeddings = []
        with torch.inference_mode():
            for i in range(0, n, 256):
                batch = torch.from_numpy(self.prep.normalize(pixels[i : i + 256]))
                embeddings.append(self.model.embed(batch).numpy())
        if rates is not None:
            return np.concatenate(embeddings), image_quality(pixels), np.array(labels), pixels
        return np.concatenate(embeddings), image_quality(pixels), np.array(labels)


def baseline_alarm(ref_scores, scores, size, start=0) -> list[int]:
    """End indices of windows where a plain KS test on the score is significant at 0.05."""
    hits = []
    for w in range(len(scores) // size):
        part = scores[w * size : (w + 1) * size]
        if stats.ks_2samp(ref_scores, part).pvalue < 0.05:
            hits.append(start + (w + 1) * size)
    return hits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stationary", type=int, default=20_000)
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "drift.json"
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        help="instead: log a 3,000-image delivery stream with a lighting drift and save a dashboard PNG",
    )
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    line = Line()
    base = SynthConfig(size=SIZE, seed=7)
    emb, quality, labels = line.stream(
        base.model_copy(update={"defect_rate": 0.3}), 1, 0, args.train, 1
    )
    half = args.train * 2 // 3
    head = LogisticRegression(max_iter=2000, C=0.5).fit(emb[:half], labels[:half])
    val_probs = head.predict_proba(emb[half:])
    order = [list(head.classes_).index(i) for i in range(len(CLASSES))]
    val_probs = val_probs[:, order]
    val_scores = 1.0 - val_probs[:, 0]
    is_defect = labels[half:] > 0
    threshold = threshold_for_false_reject_rate(val_scores[~is_defect], 0.02)
    recall = float((val_scores[is_defect] > threshold).mean())
    reference = Reference.from_arrays(
        val_probs,
        emb[half:],
        quality[half:],
        classes=CLASSES,
        threshold=threshold,
        model="apples",
        version="bench",
        metrics={
            "defect_recall": recall,
            "false_reject_rate": float((val_scores[~is_defect] > threshold).mean()),
            "n_defect": int(is_defect.sum()),
            "n_good": int((~is_defect).sum()),
        },
    )
    config = DriftConfig(size=100, alpha=0.01, persistence=2)
    print(f"model ready in {time.time() - started:.0f}s: recall {recall:.2f} at FRR 2%")
    if args.screenshot:
        dashboard_screenshot(line, head, order, reference, base, config, args.screenshot)
        return

    def probs(embeddings):
        return head.predict_proba(embeddings)[:, order]

    # stationary stream
    t0 = time.time()
    s_emb, s_quality, _ = line.stream(base, 2, 0, args.stationary, 2)
    render_s = time.time() - t0
    monitor = DriftMonitor(reference, config)
    t1 = time.time()
    s_probs = probs(s_emb)
    windows = monitor.update(s_probs, s_emb, s_quality, np.arange(len(s_emb), dtype=float))
    monitor_s = time.time() - t1
    false_alarms = [w.window for w in windows if w.alarm is not None]
    drifted_windows = sum(bool(w.drifted) for w in windows)
    base_hits = baseline_alarm(reference.scores, 1.0 - s_probs[:, 0], config.size)
    stationary = {
        "images": args.stationary,
        "windows": len(windows),
        "visionline_alarms": len(false_alarms),
        "visionline_drifted_windows": drifted_windows,
        "baseline_alarms": len(base_hits),
        "target_max_alarms": 1,
        "meets_target": len(false_alarms) <= 1,
        "monitor_seconds": round(monitor_s, 2),
        "monitor_images_per_s": round(args.stationary / monitor_s, 1),
        "render_and_embed_seconds": round(render_s, 1),
    }
    print(json.dumps(stationary))

    drifts = {}
    for kind in Drift:
        cfg = base.model_copy(update={"drift": SynthDrift(kind=kind, start=DRIFT_START, ramp=200)})
        d_emb, d_quality, _ = line.stream(cfg, 2, 0, DRIFT_START + DRIFT_LENGTH, 3)
        monitor = DriftMonitor(reference, config)
        d_probs = probs(d_emb)
        windows = monitor.update(d_probs, d_emb, d_quality, np.arange(len(d_emb), dtype=float))
        alarm = next((w for w in windows if w.alarm is not None), None)
        hits = baseline_alarm(reference.scores, 1.0 - d_probs[:, 0], config.size)
        base_after = [h for h in hits if h > DRIFT_START]
        drifts[kind.value] = {
            "visionline_delay_images": None if alarm is None else alarm.end_index - DRIFT_START,
            "visionline_alarm_before_drift": alarm is not None and alarm.end_index <= DRIFT_START,
            "visionline_detectors": None if alarm is None else alarm.alarm.detectors,
            "visionline_cause": None if alarm is None else alarm.alarm.cause,
            "baseline_delay_images": base_after[0] - DRIFT_START if base_after else None,
            "baseline_alarms_before_drift": len([h for h in hits if h <= DRIFT_START]),
            "flag_rate_before": round(float((1 - d_probs[:DRIFT_START, 0] > threshold).mean()), 4),
            "flag_rate_after": round(
                float((1 - d_probs[DRIFT_START + 200 :, 0] > threshold).mean()), 4
            ),
            "target_delay_images": 300 if kind in (Drift.DIRTY_LENS, Drift.LIGHTING) else None,
        }
        print(kind.value, json.dumps(drifts[kind.value]))

    delays = [d["visionline_delay_images"] for d in drifts.values()]
    base_delays = [d["baseline_delay_images"] for d in drifts.values()]
    result = {
        "benchmark": "drift",
        "model": "efficientnet_lite0 offline-ImageNet embeddings (64 px, frozen) + logistic-regression head",
        "reference_images": len(val_scores),
        "validation_recall_at_frr_2pct": round(recall, 3),
        "window": config.model_dump(mode="json"),
        "drift_start": DRIFT_START,
        "drift_ramp": 200,
        "stationary": stationary,
        "drifts": drifts,
        "ratio_false_alarms_visionline_to_baseline": round(
            len(false_alarms) / max(len(base_hits), 1), 4
        ),
        "mean_delay_visionline": float(np.mean([d for d in delays if d is not None] or [np.nan])),
        "mean_delay_baseline": float(
            np.mean([d for d in base_delays if d is not None] or [np.nan])
        ),
        "meets_targets": stationary["meets_target"]
        and all(
            drifts[k]["visionline_delay_images"] is not None
            and drifts[k]["visionline_delay_images"] <= 300
            for k in ("dirty_lens", "lighting")
        ),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "cpus_visible": os.cpu_count(),
            "load_average": os.getloadavg()[0],
        },
    }
    print(f"\n{'drift':<14}{'visionline delay':>18}{'baseline delay':>16}  cause")
    for kind, d in drifts.items():
        print(
            f"{kind:<14}{d['visionline_delay_images']!s:>18}{d['baseline_delay_images']!s:>16}  {d['visionline_cause']}"
        )
    print(
        f"stationary {args.stationary} images: visionline {len(false_alarms)} alarms, "
        f"baseline {len(base_hits)} alarms (ratio {result['ratio_false_alarms_visionline_to_baseline']})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def dashboard_screenshot(line, head, order, reference, base, config, out: Path) -> None:
    """Log a stream of supplier deliveries (lighting drift at image 2,000) and photograph the page."""
    import io
    import socket
    import subprocess
    import tempfile
    import threading

    import uvicorn
    from PIL import Image

    from visionline.data import BlobStore
    from visionline.monitor import LoggedPrediction, MonitorDB, PredictionLogger, validated_rates
    from visionline.monitor._dashboard import create_app

    n, per_delivery, first = 3000, 250, 50_000  # images first.. of the delivery stream
    supplier_rates = {"S-north": 0.04, "S-east": 0.08, "S-south": 0.15, "S-west": 0.25}
    names = list(supplier_rates)
    delivery_supplier = [names[(k * 3) % 4] for k in range(n // per_delivery)]
    rates = [supplier_rates[delivery_supplier[i // per_delivery]] for i in range(n)]
    cfg = base.model_copy(
        update={"drift": SynthDrift(kind=Drift.LIGHTING, start=first + 2000, ramp=200)}
    )
    emb, quality, _, pixels = line.stream(cfg, 2, first, n, 4, rates=rates)
    probs = head.predict_proba(emb)[:, order]
    work = Path(tempfile.mkdtemp(prefix="visionline-dashboard-"))
    db = MonitorDB(f"sqlite:///{work}/monitor.db")
    store = BlobStore(work / "store")
    t0 = time.time() - n * 1.2
    items = []
    for i in range(n):
        p = {c: float(v) for c, v in zip(CLASSES, probs[i])}
        score = 1.0 - p["good"]
        flagged = score > reference.threshold
        defect = max(CLASSES[1:], key=p.get)
        buf = io.BytesIO()
        Image.fromarray(pixels[i]).save(buf, "JPEG", quality=90)
        items.append(
            LoggedPrediction(
                model="apples",
                version="bench",
                probabilities=p,
                defect_score=score,
                flagged=flagged,
                decision=defect if flagged else "good",
                predicted_class=max(p, key=p.get),
                threshold=reference.threshold,
                ts=t0 + 1.2 * i,
                latency_ms=4.0,
                delivery_id=f"D-{i // per_delivery + 1:04d}",
                supplier_id=delivery_supplier[i // per_delivery],
                line="line-1",
                camera="cam-1",
                quality=quality[i].tolist(),
                embedding=emb[i],
                image=buf.getvalue(),
            )
        )
    with PredictionLogger(db, store, sample_rate=0.02) as logger:
        logger.log(items)
    from visionline.monitor import check_drift

    check_drift(db, reference, config)
    app = create_app(db, store, reference, validated_rates(reference))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:  # the page is server-rendered SVG, so Chromium's own screenshot needs no driver
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--window-size=1300,2600", f"--screenshot={out.resolve()}",
                f"http://127.0.0.1:{port}/",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"dashboard of {work}/monitor.db saved to {out}")


if __name__ == "__main__":
    main()
