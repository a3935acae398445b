"""Ingesting 5,000 small JPEGs: `DatasetRepo.add` against `dvc add` of the same folder.

visionline reads, sha256-hashes, fully decodes (corrupt/bomb check), pHashes and stores every
image, then writes a Parquet manifest. The peer, `dvc add`, md5-hashes the files and copies them
into its cache, in a fresh `git init` + `dvc init` repository. Both run in the same run on the
same images, interleaved `--repeats` times (the dev machine is shared, so medians are reported);
the script prints images/s for each and the ratio and writes benchmarks/results/ingest.json.

    .venv/bin/python benchmarks/ingest.py [--images 5000] [--size 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionline.config import Project, dump_config, parse_config
from visionline.data import DatasetRepo

RESULTS = Path(__file__).parent / "results" / "ingest.json"
DVC = Path(sys.executable).parent / "dvc"


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        w, h = (int(v) for v in rng.integers(4, size // 2, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def make_images(root: Path, n: int, size: int) -> None:
    """An ImageFolder tree: 90% good/, 10% bruise/ (a subtype of the default config)."""
    rng = np.random.default_rng(0)
    for folder in ("good", "bruise"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        folder = "bruise" if i % 10 == 0 else "good"
        (root / folder / f"{i:05d}.jpg").write_bytes(_jpeg(rng, size))


def _children_cpu() -> float:
    """CPU seconds of finished child processes (worker pools, the dvc CLI)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _project(work: Path, name: str) -> Project:
    directory = work / name
    directory.mkdir()
    (directory / "visionline.yaml").write_text(dump_config(parse_config("name: bench\n")))
    return Project.load(directory)


def time_visionline(images: Path, work: Path, run: int) -> tuple[float, float, dict]:
    """Wall and CPU seconds of `DatasetRepo.add` into a fresh project (empty blob store)."""
    repo = DatasetRepo(_project(work, f"project{run}"))
    before = _children_cpu()
    start, cpu = time.perf_counter(), time.process_time()
    report = repo.add(images)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu + _children_cpu() - before  # + its worker processes
    return (
        seconds,
        cpu,
        {
            "images": report.version.n_images,
            "skipped": len(report.skipped),
            "near_duplicates": len(report.near_duplicates),
        },
    )


def time_dvc(images: Path, work: Path, run: int) -> tuple[float, float]:
    """Wall and CPU seconds of `dvc add` in a fresh git + dvc repository (empty cache)."""
    repo = work / f"dvcrepo{run}"
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in (["git", "init", "-q"], [str(DVC), "init", "-q"]):
        subprocess.run(command, cwd=repo, check=True, env=env)
    shutil.copytree(images, repo / "images")
    before = _children_cpu()
    start = time.perf_counter()
    subprocess.run([str(DVC), "add", "-q", "images"], cwd=repo, check=True, env=env)
    return time.perf_counter() - start, _children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=3, help="Interleaved runs of each; medians reported."
    )
    args = parser.parse_args()
    vl_runs: list[tuple[float, float]] = []
    dvc_runs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="visionline-bench-") as tmp:
        work = Path(tmp)
        images = work / "images"
        make_images(images, args.images, args.size)
        for run in range(args.repeats):
            seconds, cpu, info = time_visionline(images, work, run)
            vl_runs.append((seconds, cpu))
            dvc_runs.append(time_dvc(images, work, run))
    vl_seconds = statistics.median(s for s, _ in vl_runs)
    dvc_seconds = statistics.median(s for s, _ in dvc_runs)
    vl_rate, dvc_rate = args.images / vl_seconds, args.images / dvc_seconds
    result = {
        "benchmark": "ingest",
        "images": args.images,
        "image_size": args.size,
        "repeats": args.repeats,
        "visionline": {
            "seconds_median": round(vl_seconds, 3),
            "images_per_s": round(vl_rate, 1),
            "runs_wall_cpu_s": [[round(s, 2), round(c, 2)] for s, c in vl_runs],
            **info,
        },
        "dvc_add": {
            "seconds_median": round(dvc_seconds, 3),
            "images_per_s": round(dvc_rate, 1),
            "runs_wall_cpu_s": [[round(s, 2), round(c, 2)] for s, c in dvc_runs],
        },
        "speedup_vs_dvc": round(dvc_seconds / vl_seconds, 2),
        "target_images_per_s": 300,
        "meets_target": vl_rate >= 300 and vl_seconds < dvc_seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "notes": "visionline: read + sha256 + full decode (corrupt/bomb check) + pHash + blob store + "
        "near-duplicate search + Parquet manifest, in process; dvc add: md5 + cache copy, timed as "
        "the CLI a user runs (includes its ~0.4 s start-up). Runs interleaved, medians reported; "
        "CPU seconds are shown because the dev machine is shared.",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"visionline DatasetRepo.add: {vl_rate:,.0f} images/s (median {vl_seconds:.2f} s of {args.repeats})\n"
        f"dvc add:                    {dvc_rate:,.0f} images/s (median {dvc_seconds:.2f} s of {args.repeats})\n"
        f"ratio (visionline / dvc):   {dvc_seconds / vl_seconds:.2f}x faster  -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
