"""Serving: visionline (REST + gRPC, image bytes, dynamic batching) against the in-process limit
and a KServe Python ModelServer peer, in one run on the same ONNX model over loopback.

(a) in-process: decode + preprocess + ONNX Runtime in a loop: batch 1 latency, measured for one
    window next to every c=1 server point and pooled; throughput over batch sizes 1-16 once per
    round, and a fresh window at that round's best batch size next to every visionline c=8
    point: the c=8 yardstick, pooled (on a shared VM the limit moves 1.5x within a minute, and
    re-measuring the winner avoids the upward bias of taking the best of noisy numbers);
(b) `visionline serve` in a subprocess, REST (Triton binary extension) and gRPC, image bytes;
(c) KServe 0.21 `ModelServer` in a subprocess from its own venv (KSERVE_PYTHON, default
    /tmp/kserve-venv/bin/python), same model, same ONNX Runtime threads, in two client modes:
    - JSON FP32 tensors: the client preprocesses and sends the [1, 3, S, S] tensor as v2 JSON
      `data`, as a typical KServe client does; the issue's own reference measurement (about
      47 req/s at c=1, 26 req/s at c=8) used this configuration;
    - image bytes: REST v2 JSON with base64 images (it refuses the binary extension) and gRPC,
      decoded on the server with the same preprocessing code: KServe's strongest setup.
Closed-loop clients sweep concurrency 1, 4, 8, 16 for WINDOW seconds each; p50/p95/p99 and
throughput per point. Every client sends one pre-built request (http.client with the binary
extension body, a raw v2 gRPC stub), like Triton's perf_analyzer, so the client library's
per-call cost stays out of the servers' figures; the same clients drive KServe. Images: real
magnetic-tile JPEGs from ../shared/data (synthetic if absent).
Targets, for REST and gRPC alike: c=1 p50 <= in-process p50 + 2 ms; c=8 throughput >= 0.8x
in-process best-batch and >= 3x KServe (reported against both KServe modes).
Run: .venv/bin/python benchmarks/serving.py [--window 3] [--size 128] [--tag NAME]
(the server subprocess inherits the environment, so PYTHONPATH=DIR tries another server stack)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "magnetic-tile-defect"
RESULTS = ROOT / "benchmarks" / "results"
CLASSES = ["good", "bruise", "rot"]
CONCURRENCY = (1, 4, 8, 16)
VISIONLINE = ("visionline REST", "visionline gRPC")

KSERVE_SERVER = r'''
import base64, sys
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from visionline.preprocessing import Preprocessing, decode_image

class OnnxImages(Model):
    def __init__(self, name, path, size, threads):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.prep = Preprocessing(size=size)
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        tensor = payload.inputs[0]
        if tensor.datatype == "FP32":  # a client that preprocessed the image itself
            batch = np.ascontiguousarray(tensor.as_numpy(), dtype=np.float32)
        else:
            items = tensor.as_numpy().reshape(-1)
            raws = [base64.b64decode(i) if isinstance(i, str) else bytes(i) for i in items]
            batch = self.prep([decode_image(r) for r in raws])
        probs, _ = self.session.run(["probabilities", "embedding"], {"image": batch})
        out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
        out.set_data_from_numpy(probs, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "0")

if __name__ == "__main__":
    model_path, size, http_port, grpc_port, threads = sys.argv[1], *map(int, sys.argv[2:6])
    ModelServer(http_port=http_port, grpc_port=grpc_port, enable_grpc=True, workers=1).start(
        [OnnxImages("apples", model_path, size, threads)]
    )
'''


def server_stack() -> dict[str, str | None]:
    """The optional uvicorn[standard] pieces `visionline serve` picks up when installed."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in ("uvicorn", "uvloop", "httptools", "grpcio"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_images(count: int) -> list[bytes]:
    files = sorted((DATA / "MT_Free" / "Imgs").glob("*.jpg"))[: count // 2]
    files += sorted((DATA / "MT_Crack" / "Imgs").glob("*.jpg"))[: count - len(files)]
    if files:
        return [f.read_bytes() for f in files]
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (300, 400), dtype=np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def build_bundle(size: int, work: Path) -> Path:
    import torch

    from visionline.export import export_onnx
    from visionline.export._bundle import finalize_bundle
    from visionline.preprocessing import Preprocessing
    from visionline.train import ModelSpec, build_model

    torch.manual_seed(0)
    spec = ModelSpec("mobilenetv3_small_100", CLASSES, Preprocessing(size=size))
    bundle = work / "repo" / "apples" / "1"
    export_onnx(build_model(spec).eval(), size, bundle / "model.onnx")
    finalize_bundle(bundle, {
        "name": "apples", "version": "1", "classes": CLASSES,
        "class_labels": {"good": "good", "bruise": "defect", "rot": "defect"}, "threshold": 0.5,
        "preprocessing": spec.preprocessing.to_dict(), "models": {"fp32": {"file": "model.onnx"}},
        "deployed": "fp32",
    })
    return bundle


def summarize(latencies: list[float], elapsed: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(ms),
        "throughput_rps": round(len(ms) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


class InProcess:
    """The limit: decode + preprocess + ONNX Runtime in a loop in this process, no server."""

    def __init__(self, bundle: Path, threads: int) -> None:
        from visionline.export.runtime import load_bundle

        model = load_bundle(bundle, threads=threads)
        self.prep, self.session = model.preprocessing, model.session

    def run(self, batch_images: list[bytes]) -> None:
        from visionline.preprocessing import decode_image

        self.session.run(["probabilities", "embedding"], {"image": self.prep([decode_image(b) for b in batch_images])})

    def batch1(self, image: bytes, window: float) -> list[float]:
        """Per-image latencies for one window; taken next to every c=1 server point, so the
        overhead compares windows that saw the same load from other processes."""
        self.run([image])
        latencies, end = [], time.perf_counter() + window
        while time.perf_counter() < end:
            t = time.perf_counter()
            self.run([image])
            latencies.append(time.perf_counter() - t)
        return latencies

    def throughput(self, images: list[bytes], n: int, window: float) -> tuple[int, float]:
        """Images done and seconds taken at batch size `n` over one window."""
        self.run(images[:n])
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < window:
            self.run([images[(done + k) % len(images)] for k in range(n)])
            done += n
        return done, time.perf_counter() - start

    def by_batch(self, images: list[bytes], window: float) -> dict[int, float]:
        """Images per second at batch sizes 1-16 (the best one is the c=8 yardstick)."""
        result = {}
        for n in (1, 2, 4, 8, 16):
            done, elapsed = self.throughput(images, n, window / 2)
            result[n] = round(done / elapsed, 1)
        return result


def http_worker_factory(port: int, body: bytes, headers: dict[str, str]):
    import http.client

    def make():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()  # no Nagle: http.client writes headers and body separately
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def call() -> None:
            conn.request("POST", "/v2/models/apples/infer", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        call.close = conn.close
        return call
    return make


def grpc_worker_factory(port: int, image: bytes):
    """A v2 gRPC client that sends one pre-built request, as the REST client sends one pre-built
    body: both then measure the server, not the client library (the tests prove tritonclient)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="apples")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    request.outputs.add(name="probabilities")

    def make():
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer

        def call() -> None:
            response = infer(request, timeout=60)
            if [o.name for o in response.outputs] != ["probabilities"]:  # raw or typed contents
                raise RuntimeError(f"unexpected response: {response}")
        call.close = channel.close
        return call
    return make


def measure(make_call, c: int, window: float) -> tuple[list[float], float, list[str]]:
    """Closed loop: c threads, each sends its next request when the last one answered."""
    calls = [make_call() for _ in range(c)]
    for call in calls:
        call()
    latencies: list[list[float]] = [[] for _ in range(c)]
    errors: list[str] = []
    stop_at = time.perf_counter() + window

    def loop(k: int) -> None:
        call, mine = calls[k], latencies[k]
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                call()
            except Exception as exc:  # counted and reported, never hidden
                errors.append(repr(exc)[:200])
                continue
            mine.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for call in calls:  # no idle connections or channel threads left behind in this process
        call.close()
    return [x for part in latencies for x in part], elapsed, errors


def wait_http(url: str, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{url} never became ready")


def binary_image_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    raw = len(image).to_bytes(4, "little") + image
    head = json.dumps({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def kserve_json_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "data": [base64.b64encode(image).decode()]}]}).encode()
    return body, {"Content-Type": "application/json"}


def kserve_tensor_body(image: bytes, size: int) -> tuple[bytes, dict[str, str]]:
    """What a typical KServe client sends: the preprocessed FP32 tensor as a v2 JSON `data` list."""
    from visionline.preprocessing import Preprocessing, decode_image

    tensor = Preprocessing(size=size)([decode_image(image)])
    body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(tensor.shape),
                                   "data": tensor.reshape(-1).tolist()}]}).encode()
    return body, {"Content-Type": "application/json"}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in report["servers"].items():
        cs = sorted(int(c) for c in points)
        left.plot(cs, [points[c]["throughput_rps"] for c in cs], marker="o", label=name)
        right.plot(cs, [points[c]["p95_ms"] for c in cs], marker="o", label=name)
    yardstick = report["in_process"]["best_batch_beside_c8"].values()
    left.axhline(sum(yardstick) / len(yardstick), ls="--", c="grey", label="in-process best batch (beside c=8)")
    right.axhline(report["in_process"]["batch1"]["p50_ms"], ls=":", c="grey", label="in-process p50 (batch 1)")
    left.set(xlabel="concurrency", ylabel="requests/s (1 image each)", title="Throughput")
    right.set(xlabel="concurrency", ylabel="p95 latency (ms)", title="Latency", yscale="log")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def targets(ratios: dict[str, float]) -> dict[str, bool]:
    """The issue's targets, each for REST and gRPC alike."""
    return {
        "c1_p50_overhead_le_2ms": max(ratios["c1_p50_overhead_ms_rest"], ratios["c1_p50_overhead_ms_grpc"]) <= 2.0,
        "c8_ge_0.8x_in_process_best": min(ratios["c8_rest_vs_in_process_best"], ratios["c8_grpc_vs_in_process_best"]) >= 0.8,
        "c8_ge_3x_kserve_json_tensors": min(
            ratios.get("c8_rest_vs_kserve_json_tensor", 0), ratios.get("c8_grpc_vs_kserve_json_tensor", 0)
        ) >= 3.0,
        "c8_ge_3x_kserve_image_bytes": min(
            ratios.get("c8_rest_vs_kserve_rest", 0), ratios.get("c8_grpc_vs_kserve_grpc", 0)
        ) >= 3.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=3.0, help="seconds per concurrency point")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, same for all")
    parser.add_argument("--tag", default="", help="write serving-TAG.json/.png, e.g. for another server stack")
    parser.add_argument("--kserve-python", default=os.environ.get("KSERVE_PYTHON", "/tmp/kserve-venv/bin/python"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vl-serving-bench-"))
    images = load_images(32)
    bundle = build_bundle(args.size, work)
    image = images[0]
    report: dict = {
        "model": f"mobilenetv3_small_100 @ {args.size}px, ONNX FP32 (random head)",
        "images": f"{len(images)} magnetic-tile JPEGs, {len(image)} bytes for the served one",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared)",
        "window_s": args.window,
        "rounds": args.rounds,
        "ort_threads": args.threads,
        "server_stack": server_stack(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "servers": {},
    }
    processes = []
    systems: dict[str, object] = {}
    try:
        http_port, grpc_port = free_port(), free_port()
        processes.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "visionline"), "serve", str(work / "repo"), "--http-port", str(http_port),
             "--grpc-port", str(grpc_port), "--max-batch-size", "16", "--max-queue-delay-us", "2000",
             "--threads", str(args.threads), "--log-format", "text"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_http(f"http://127.0.0.1:{http_port}/v2/health/ready")
        body, headers = binary_image_body(image)
        systems["visionline REST"] = http_worker_factory(http_port, body, headers)
        systems["visionline gRPC"] = grpc_worker_factory(grpc_port, image)
        if Path(args.kserve_python).exists():
            script = work / "kserve_server.py"
            script.write_text(KSERVE_SERVER)
            k_http, k_grpc = free_port(), free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            processes.append(subprocess.Popen(
                [args.kserve_python, str(script), str(bundle / "model.onnx"), str(args.size), str(k_http),
                 str(k_grpc), str(args.threads)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            ))
            wait_http(f"http://127.0.0.1:{k_http}/v2/models/apples/ready")
            body, headers = kserve_tensor_body(image, args.size)
            systems["KServe REST (JSON FP32 tensor)"] = http_worker_factory(k_http, body, headers)
            report["kserve_tensor_body_bytes"] = len(body)
            body, headers = kserve_json_body(image)
            systems["KServe REST (JSON)"] = http_worker_factory(k_http, body, headers)
            systems["KServe gRPC"] = grpc_worker_factory(k_grpc, image)
            report["kserve_version"] = subprocess.run(
                [args.kserve_python, "-c", "import importlib.metadata as m; print(m.version('kserve'))"],
                capture_output=True, text=True, check=False,
            ).stdout.strip()
        else:
            report["kserve_version"] = None
            print("KServe is not installed at", args.kserve_python, "- peer skipped", flush=True)

        # Interleaved rounds: load from other processes on a shared machine hits every system alike.
        collected = {name: {c: ([], 0.0, []) for c in CONCURRENCY} for name in systems}
        limit = InProcess(bundle, args.threads)
        single: list[float] = []
        rounds_by_batch = []
        beside_c8 = {name: [0, 0.0] for name in VISIONLINE}
        for r in range(args.rounds):
            rounds_by_batch.append(limit.by_batch([image] * 16, args.window))
            round_best = max(rounds_by_batch[-1], key=rounds_by_batch[-1].get)
            for c in CONCURRENCY:
                for name, make_call in systems.items():
                    if c == 1:
                        single += limit.batch1(image, args.window)
                    if c == 8 and name in beside_c8:  # a fresh window at this round's best batch size
                        done, elapsed = limit.throughput([image] * 16, round_best, args.window)
                        beside_c8[name][0] += done
                        beside_c8[name][1] += elapsed
                    lat, elapsed, errs = measure(make_call, c, args.window)
                    old = collected[name][c]
                    collected[name][c] = (old[0] + lat, old[1] + elapsed, old[2] + errs)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    by_batch = {n: round(float(np.median([r[n] for r in rounds_by_batch])), 1) for n in rounds_by_batch[0]}
    best = max(by_batch, key=by_batch.get)
    report["in_process"] = {
        "batch1": summarize(single, sum(single)),
        "images_per_s_by_batch": by_batch, "best_batch": best, "best_images_per_s": by_batch[best],
        "best_batch_beside_c8": {name: round(done / elapsed, 1) for name, (done, elapsed) in beside_c8.items()},
    }
    print("in-process (decode + preprocess + ONNX Runtime):", report["in_process"])
    for name in systems:
        report["servers"][name] = {}
        for c in CONCURRENCY:
            lat, elapsed, errs = collected[name][c]
            point = {**summarize(lat, elapsed), "errors": len(errs)}
            report["servers"][name][c] = point
            print(f"  {name:20s} c={c:<3d} {point['throughput_rps']:8.1f} req/s  p50 {point['p50_ms']:7.2f} ms"
                  f"  p95 {point['p95_ms']:7.2f}  p99 {point['p99_ms']:7.2f}  errors {len(errs)}")

    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    inproc = report["in_process"]
    servers = report["servers"]
    rest, grpc_ = servers["visionline REST"], servers["visionline gRPC"]
    ratios = {
        "c1_p50_overhead_ms_rest": round(rest[1]["p50_ms"] - inproc["batch1"]["p50_ms"], 3),
        "c1_p50_overhead_ms_grpc": round(grpc_[1]["p50_ms"] - inproc["batch1"]["p50_ms"], 3),
        "c8_rest_vs_in_process_best": round(rest[8]["throughput_rps"] / inproc["best_batch_beside_c8"]["visionline REST"], 3),
        "c8_grpc_vs_in_process_best": round(grpc_[8]["throughput_rps"] / inproc["best_batch_beside_c8"]["visionline gRPC"], 3),
    }
    if "KServe REST (JSON)" in servers:
        tensors = servers["KServe REST (JSON FP32 tensor)"][8]["throughput_rps"]
        ratios["c8_rest_vs_kserve_json_tensor"] = round(rest[8]["throughput_rps"] / tensors, 3)
        ratios["c8_grpc_vs_kserve_json_tensor"] = round(grpc_[8]["throughput_rps"] / tensors, 3)
        ratios["c1_p50_overhead_ms_kserve_rest"] = round(
            servers["KServe REST (JSON)"][1]["p50_ms"] - inproc["batch1"]["p50_ms"], 3
        )  # the same yardstick for a server that decodes on its event loop, with no thread hops
        ratios["c8_rest_vs_kserve_rest"] = round(rest[8]["throughput_rps"] / servers["KServe REST (JSON)"][8]["throughput_rps"], 3)
        ratios["c8_grpc_vs_kserve_grpc"] = round(grpc_[8]["throughput_rps"] / servers["KServe gRPC"][8]["throughput_rps"], 3)
    report["ratios"] = ratios
    report["targets"] = targets(ratios)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"serving-{args.tag}" if args.tag else "serving"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, RESULTS / f"{stem}.png")
    print("\nratios:", json.dumps(ratios, indent=1))
    print("targets:", json.dumps(report["targets"], indent=1))


if __name__ == "__main__":
    main()
