"""`visionline bench`: PyTorch eager, ONNX FP32 and ONNX INT8 side by side, one subprocess each.

Each backend runs in its own process, so its peak memory is a clean RSS delta (`psutil` before
loading, `getrusage` peak after) that includes native allocations tracemalloc cannot see.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import ConfigError, GateFailedError, NotFoundError

E2E_IMAGE = (640, 480)


@dataclass
class BenchReport:
    target: str
    threads: int
    batches: list[int]
    budget_ms: float | None
    deployed: str
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        """Speed-ups of batch-1 p50 latency between backends."""
        p50 = {k: v["latency_ms"]["p50"] for k, v in self.backends.items()}
        out = {}
        if "pytorch" in p50 and "onnx_fp32" in p50:
            out["onnx_fp32_vs_pytorch"] = p50["pytorch"] / p50["onnx_fp32"]
        if "onnx_fp32" in p50 and "onnx_int8" in p50:
            out["onnx_int8_vs_fp32"] = p50["onnx_fp32"] / p50["onnx_int8"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios(), "gate": self.gate()}

    def gate(self) -> dict[str, Any] | None:
        if self.budget_ms is None or self.deployed not in self.backends:
            return None
        p95 = self.backends[self.deployed]["latency_ms"]["p95"]
        return {
            "backend": self.deployed,
            "p95_ms": p95,
            "budget_ms": self.budget_ms,
            "passed": p95 <= self.budget_ms,
        }

    def check_gate(self) -> None:
        gate = self.gate()
        if gate and not gate["passed"]:
            raise GateFailedError(
                f"{gate['backend']} p95 latency {gate['p95_ms']:.1f} ms is above the edge budget of "
                f"{gate['budget_ms']:.1f} ms; quantise or prune the model, or use a smaller backbone or image size."
            )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _jpeg(size: tuple[int, int]) -> bytes:
    from PIL import Image

    from visionline.export._data import synthetic_pixels

    image = Image.fromarray(synthetic_pixels(128, 1)[0]).resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _run_worker(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "visionline.export._bench", json.dumps(job)],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"Benchmark of {job['kind']} failed ({tail[0]}); check the model file.")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(
    target: Path,
    batches: list[int],
    threads: int = 2,
    torch_model: Path | None = None,
    runs: int = 50,
    budget_ms: float | None = None,
) -> BenchReport:
    """Measure every available backend of `target` (a bundle or a model.pt) in one run."""
    from rich.progress import Progress

    from visionline_edge import release_unpacked, verify_bundle

    target = Path(target)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="visionline-bench-") as tmp, ExitStack() as cleanup:
        files: dict[str, Path] = {}
        if target.is_file() and target.suffix == ".pt":
            from visionline.export._data import synthetic_pixels
            from visionline.export._onnx import export_onnx
            from visionline.export._quantize import quantize_int8
            from visionline.train import load_model

            model, spec = load_model(target)
            size = spec.preprocessing.size
            files["onnx_fp32"] = export_onnx(
                model, size, Path(tmp) / "model.onnx", spec.temperature
            )
            calib = spec.preprocessing.normalize(synthetic_pixels(size, 16))
            files["onnx_int8"] = quantize_int8(
                files["onnx_fp32"], Path(tmp) / "model.int8.onnx", calib
            )
            notes.append(
                "INT8 was calibrated on synthetic images: its latency is real, its accuracy is not; export with --data for a gated INT8 model."
            )
            torch_model, deployed, prep = target, "onnx_int8", spec.preprocessing.to_dict()
        elif target.exists():
            manifest = verify_bundle(target)
            cleanup.callback(release_unpacked, manifest)  # an archive's copy lives as long as this
            root = Path(manifest["_root"])
            for key, entry in manifest["models"].items():
                if key in ("fp32", "int8"):
                    files[f"onnx_{key}"] = root / entry["file"]
            deployed, prep = f"onnx_{manifest['deployed']}", manifest["preprocessing"]
            size = prep["size"]
            if torch_model is None:
                notes.append("PyTorch eager skipped: pass --model model.pt to include it.")
        else:
            raise NotFoundError(
                f"No bundle or model at {target}; pass a bundle directory, .tar.gz or model.pt."
            )
        jpeg = Path(tmp) / "frame.jpg"
        jpeg.write_bytes(_jpeg(E2E_IMAGE))
        jobs = {}
        if torch_model is not None:
            jobs["pytorch"] = {"kind": "pytorch", "path": str(torch_model)}
        for key, path in files.items():
            jobs[key] = {"kind": "onnx", "path": str(path)}
        report = BenchReport(str(target), threads, batches, budget_ms, deployed, notes=notes)
        with Progress(transient=True) as bar:
            task = bar.add_task("benchmark", total=len(jobs))
            for key, job in jobs.items():
                bar.update(task, description=f"benchmark {key}")
                job |= {
                    "size": size,
                    "batches": batches,
                    "threads": threads,
                    "runs": runs,
                    "jpeg": str(jpeg),
                    "preprocessing": prep,
                }
                result = _run_worker(job)
                result["model_bytes"] = Path(job["path"]).stat().st_size
                report.backends[key] = result
                bar.advance(task)
    return report


def print_report(report: BenchReport, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{report.target} · {report.threads} threads")
    table.add_column("backend")
    for col in (
        "p50 ms",
        "p95 ms",
        "p99 ms",
        *(f"img/s @{b}" for b in report.batches[1:]),
        "e2e ms/img",
        "peak MB",
        "size MB",
    ):
        table.add_column(col, justify="right")
    for key, r in report.backends.items():
        lat = r["latency_ms"]
        table.add_row(
            key + (" *" if key == report.deployed else ""),
            f"{lat['p50']:.2f}",
            f"{lat['p95']:.2f}",
            f"{lat['p99']:.2f}",
            *(f"{r['throughput'][str(b)]:.0f}" for b in report.batches[1:]),
            f"{r['e2e_ms_per_image']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['model_bytes'] / 1e6:.1f}",
        )
    console.print(table)
    for name, ratio in report.ratios().items():
        console.print(f"{name}: {ratio:.2f}×")
    gate = report.gate()
    if gate:
        colour = "green" if gate["passed"] else "red"
        console.print(
            f"[{colour}]latency gate[/{colour}] {gate['backend']} p95 {gate['p95_ms']:.2f} ms vs budget {gate['budget_ms']:.1f} ms"
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _worker(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: load one backend, time it, report peak RSS growth."""
    import resource

    import psutil

    from visionline.preprocessing import Preprocessing, decode_image

    prep = Preprocessing.from_dict(job["preprocessing"])
    size, threads, runs = job["size"], job["threads"], job["runs"]
    if job["kind"] == "pytorch":
        import torch

        torch.set_num_threads(threads)
        from visionline.export._onnx import _wrapper
        from visionline.train import load_model

        baseline = psutil.Process().memory_info().rss
        model, spec = load_model(job["path"])
        wrapped = _wrapper(model, spec.temperature)

        def infer(x: np.ndarray) -> Any:
            with torch.inference_mode():
                return wrapped(torch.from_numpy(x))
    else:
        from visionline.export._onnx import onnx_session

        baseline = psutil.Process().memory_info().rss
        session = onnx_session(Path(job["path"]), threads)

        def infer(x: np.ndarray) -> Any:
            return session.run(None, {"image": x})

    def timed(x: np.ndarray, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            infer(x)
            out.append((time.perf_counter() - start) * 1000)
        return out

    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    timed(one, 5)
    lat = np.asarray(timed(one, runs))
    throughput = {}
    for b in job["batches"][1:]:
        x = rng.standard_normal((b, 3, size, size)).astype(np.float32)
        timed(x, 2)
        times = timed(x, max(3, runs // b))
        throughput[str(b)] = b / (float(np.median(times)) / 1000)
    data = Path(job["jpeg"]).read_bytes()
    e2e = []
    for _ in range(max(10, runs // 2)):
        start = time.perf_counter()
        infer(prep([decode_image(data)]))
        e2e.append((time.perf_counter() - start) * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)}
        | {"mean": float(lat.mean())},
        "throughput": throughput,
        "e2e_ms_per_image": float(np.median(e2e)),
        "peak_rss_mb": max(0.0, (peak - baseline) / 1e6),
    }


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
