"""ONNX Runtime on a CUDA GPU vs the CPU provider: efficientnet_lite0, FP32 and FP16, batch 1 and 32.

Self-contained: run it once on a machine with an NVIDIA GPU and `pip install onnxruntime-gpu
onnxconverter-common timm torch`. Uses the offline ImageNet weights when visionline is installed,
random weights otherwise (latency does not depend on the weights).
Writes benchmarks/results/gpu_onnx.json through `_record.write_result` (run it from a checkout).  Run: python benchmarks/gpu_onnx.py [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import write_result


def export(path: Path, size: int) -> str:
    import timm
    import torch

    model = timm.create_model("efficientnet_lite0", num_classes=1000)
    weights = "random"
    try:
        from visionline.train import load_pretrained

        load_pretrained(model, "efficientnet_lite0", "imagenet")
        weights = "offline ImageNet"
    except Exception as exc:  # noqa: BLE001 - visionline is optional here
        print(f"note: random weights ({type(exc).__name__}: {exc})")
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, size, size),),
        str(path),
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return weights


def to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    onnx.save(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def time_session(session, batch: int, size: int, runs: int) -> dict:
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(10):
        session.run(None, {"image": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"image": x})
        times.append((time.perf_counter() - start) * 1000)
    p50 = float(np.percentile(times, 50))
    return {
        "p50_ms": p50,
        "p95_ms": float(np.percentile(times, 95)),
        "images_per_s": batch / (p50 / 1000),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        print(
            f"CUDAExecutionProvider is not available (providers: {', '.join(providers)}); "
            "install onnxruntime-gpu (not onnxruntime) with a matching CUDA/cuDNN and rerun on a GPU machine."
        )
        return 2
    results: dict = {
        "onnxruntime": ort.__version__,
        "size": args.size,
        "runs": args.runs,
        "results": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        results["weights"] = export(fp32, args.size)
        fp16 = Path(tmp) / "fp16.onnx"
        to_fp16(fp32, fp16)
        for precision, path in (("fp32", fp32), ("fp16", fp16)):
            for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
                session = ort.InferenceSession(str(path), providers=[provider])
                if session.get_providers()[0] != provider:
                    continue
                for batch in (1, 32):
                    if provider == "CPUExecutionProvider" and precision == "fp16":
                        continue
                    key = (
                        f"{precision}/{provider.removesuffix('ExecutionProvider').lower()}/b{batch}"
                    )
                    results["results"][key] = time_session(
                        session,
                        batch,
                        args.size,
                        args.runs if batch == 1 else max(10, args.runs // 4),
                    )
                    print(key, results["results"][key])
    r = results["results"]
    for b in (1, 32):
        if f"fp32/cuda/b{b}" in r and f"fp32/cpu/b{b}" in r:
            results[f"cuda_vs_cpu_fp32_b{b}"] = (
                r[f"fp32/cpu/b{b}"]["p50_ms"] / r[f"fp32/cuda/b{b}"]["p50_ms"]
            )
        if f"fp16/cuda/b{b}" in r and f"fp32/cuda/b{b}" in r:
            results[f"fp16_vs_fp32_cuda_b{b}"] = (
                r[f"fp32/cuda/b{b}"]["p50_ms"] / r[f"fp16/cuda/b{b}"]["p50_ms"]
            )
    results["readme"] = [
        {
            "benchmark": "gpu_onnx",
            "measure": f"efficientnet_lite0 @{args.size} p50 latency, ONNX Runtime FP32, batch {b}",
            "visionline": f"CUDA provider {r[f'fp32/cuda/b{b}']['p50_ms']:.2f} ms",
            "peer": f"CPU provider {r[f'fp32/cpu/b{b}']['p50_ms']:.2f} ms",
            "result": f"{results[f'cuda_vs_cpu_fp32_b{b}']:.1f}x",
        }
        for b in (1, 32)
        if f"cuda_vs_cpu_fp32_b{b}" in results
    ]
    out = write_result("gpu_onnx", results)
    print(json.dumps({k: v for k, v in results.items() if k != "results"}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
