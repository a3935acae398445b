"""Edge line agent: frame arrival → reject signal latency at a sustained item rate, against the
bare bundle inference of the same frames in the same run.

The bundle is the demo's architecture (efficientnet_lite0 with the offline ImageNet trunk and a
six-class head at 128 px, exported to ONNX FP32 and signed; the head is untrained because speed,
not accuracy, is measured). The agent runs its real loop: `synth://` frames at `--rate` items/s,
the verdict on its worker thread within the deadline, the SQLite WAL outbox commit, then the
sink, which stamps the time (a PLC write adds its own network time; the PLC helper measures
that). Latency = sink time − frame arrival (the source's timestamp). Bare inference times
`Preprocessing` + `EdgeModel.predict_array` on the same frames, batch 1, same ONNX Runtime
threads. Agent and bare runs alternate in `--rounds` rounds; percentiles pool the rounds.
Targets (issue 19): p99 ≤ 50 ms at 20 items/s, p50 overhead over bare ≤ 5 ms, no deadline misses.
Run: .venv/bin/python benchmarks/edge_agent.py [--rate 20] [--seconds 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import uncommitted_code, write_result

from visionline.edge import Decider, FailSafe, LineAgent, Outbox, SynthSource, Verdict
from visionline.edge._decide import infer

CLASSES = ["good", "bruise", "rot", "scab", "cut", "insect_hole"]


def build_bundle(tmp: Path, size: int) -> tuple[Path, Path]:
    """A signed bundle of the demo's architecture; (bundle, public key)."""
    from visionline.export import generate_keys
    from visionline.export._bundle import finalize_bundle
    from visionline.export._onnx import export_onnx
    from visionline.preprocessing import Preprocessing
    from visionline.train._backbones import load_pretrained
    from visionline.train._model import ModelSpec, build_model

    private, public = generate_keys(tmp / "keys")
    spec = ModelSpec("efficientnet_lite0", CLASSES, Preprocessing(size=size))
    model = build_model(spec).eval()
    load_pretrained(model.backbone, spec.backbone, "imagenet")
    bundle = tmp / "bundle"
    export_onnx(model, size, bundle / "model.onnx")
    manifest = {
        "name": "apples", "version": "bench", "classes": CLASSES,
        "class_labels": {c: ("good" if c == "good" else "defect") for c in CLASSES},
        "threshold": 0.5, "preprocessing": spec.preprocessing.to_dict(),
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32"}}, "deployed": "fp32",
    }
    finalize_bundle(bundle, manifest, signing_key=private)
    return bundle, public


class StampingSink:
    """The PLC stand-in: records when each verdict arrived."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.fail_safe = 0

    def send(self, verdict: Verdict) -> None:
        self.latencies.append(time.time() - verdict.captured_at)
        self.fail_safe += verdict.fail_safe

    def close(self) -> None:
        pass


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--deadline-ms", type=float, default=50.0)
    args = parser.parse_args()
    if uncommitted_code():
        raise SystemExit("Commit first: " + ", ".join(uncommitted_code()))
    from visionline_edge import load_bundle

    tmp = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    bundle, public = build_bundle(tmp, args.size)
    model = load_bundle(bundle, public, threads=args.threads, require_signature=True)
    count = int(args.rate * args.seconds)
    agent_lat: list[float] = []
    bare_lat: list[float] = []
    misses = 0
    started = time.perf_counter()
    for r in range(args.rounds):
        sink = StampingSink()
        decider = Decider(model, args.deadline_ms, FailSafe.reject)
        source = SynthSource(rate=args.rate, count=count, start=r * count, size=args.size)
        LineAgent(source, decider, Outbox(tmp / f"outbox-{r}.db"), sink).run()
        decider.close()
        agent_lat += sink.latencies
        misses += sink.fail_safe
        for frame in SynthSource(rate=1e6, count=count, start=r * count, size=args.size):
            t0 = time.perf_counter()
            infer(model, frame)
            bare_lat.append(time.perf_counter() - t0)
    agent, bare = pct(agent_lat), pct(bare_lat)
    overhead = round(agent["p50"] - bare["p50"], 2)
    print(f"agent {agent} ms, bare {bare} ms, p50 overhead {overhead} ms, "
          f"deadline misses {misses}/{len(agent_lat)}")
    result = {
        "benchmark": "edge_agent",
        "config": {**vars(args), "items_per_round": count, "model": "efficientnet_lite0 fp32",
                   "sink": "in-process timestamp (no PLC network write)"},
        "agent_ms": agent, "bare_inference_ms": bare, "p50_overhead_ms": overhead,
        "deadline_misses": misses, "items": len(agent_lat),
        "targets": {"p99_ms": 50, "p50_overhead_ms": 5, "deadline_misses": 0},
        "wall_s": round(time.perf_counter() - started, 1),
        "readme": [{
            "benchmark": "edge agent",
            "measure": f"arrival→signal at {args.rate:g} items/s, {len(agent_lat)} items",
            "visionline": f"p50 {agent['p50']} / p99 {agent['p99']} ms",
            "peer": f"bare inference p50 {bare['p50']} / p99 {bare['p99']} ms",
            "result": f"+{overhead} ms at p50, {misses} deadline misses",
        }],
    }
    print(write_result("edge_agent", result))


if __name__ == "__main__":
    main()
