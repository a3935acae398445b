"""Ingesting 5,000 small JPEGs: visionline against `dvc add` of the same folder, timed two ways.

visionline reads, sha256-hashes, fully decodes (corrupt/bomb check), pHashes and stores every
image, then writes a Parquet manifest. The peer, `dvc add`, md5-hashes the files and copies them
into its cache, in a fresh `git init` + `dvc init` repository. Each is timed the same two ways:
as the command a user types (`visionline data add` and `dvc add`, a new process each, so start-up
counts for both) and in process (`DatasetRepo(...).add(...)` and `dvc.repo.Repo(...).add(...)`,
opening the project/repository included, interpreter start-up and imports excluded). The four are
interleaved `--repeats` times on the same images (the dev machine is shared, so medians are
reported); the script prints images/s and both ratios.

    .venv/bin/python benchmarks/ingest.py [--images 5000] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import write_result
from PIL import Image, ImageDraw

from visionline.config import Project, dump_config, parse_config
from visionline.data import DatasetRepo

DVC = Path(sys.executable).parent / "dvc"
VISIONLINE = Path(sys.executable).parent / "visionline"
DVC_ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


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


def _timed(function) -> tuple[float, float]:
    """Wall and CPU seconds of `function()`, CPU including its threads and child processes."""
    before = _children_cpu()
    start, cpu = time.perf_counter(), time.process_time()
    function()
    seconds = time.perf_counter() - start
    return seconds, time.process_time() - cpu + _children_cpu() - before


def _dvc_repo(images: Path, work: Path, name: str) -> Path:
    """A fresh git + dvc repository holding a copy of the images (empty cache)."""
    repo = work / name
    repo.mkdir()
    for command in (["git", "init", "-q"], [str(DVC), "init", "-q"]):
        subprocess.run(command, cwd=repo, check=True, env=DVC_ENV)
    shutil.copytree(images, repo / "images")
    return repo


def visionline_cli(images: Path, work: Path, run: int) -> tuple[float, float]:
    """`visionline data add` into a fresh project (empty blob store), as a new process."""
    project = _project(work, f"cli{run}").root
    command = [str(VISIONLINE), "data", "add", str(images), "--project", str(project)]
    return _timed(lambda: subprocess.run(command, check=True, capture_output=True))


def visionline_in_process(images: Path, work: Path, run: int) -> tuple[float, float]:
    """`DatasetRepo(Project.load(...)).add(...)` into a fresh project, in this process."""
    root = _project(work, f"api{run}").root
    return _timed(lambda: DatasetRepo(Project.load(root)).add(images))


def dvc_cli(images: Path, work: Path, run: int) -> tuple[float, float]:
    """`dvc add images` in a fresh repository, as a new process."""
    repo = _dvc_repo(images, work, f"dvccli{run}")
    command = [str(DVC), "add", "-q", "images"]
    return _timed(lambda: subprocess.run(command, cwd=repo, check=True, env=DVC_ENV))


def dvc_in_process(images: Path, work: Path, run: int) -> tuple[float, float]:
    """`dvc.repo.Repo(...).add("images")` in a fresh repository, in this process."""
    from dvc.repo import Repo

    repo = _dvc_repo(images, work, f"dvcapi{run}")

    def add() -> None:  # its git hints go to stdout; the CLI run above is quiet (-q) too
        with Repo(str(repo)) as dvc, contextlib.redirect_stdout(io.StringIO()):
            dvc.add("images")

    cwd = os.getcwd()
    os.chdir(repo)  # dvc resolves targets against the working directory, as its CLI does
    try:
        return _timed(add)
    finally:
        os.chdir(cwd)


def _dvc_files(repo: Path) -> int:
    """The file count dvc recorded for the added folder."""
    import yaml

    return int(yaml.safe_load((repo / "images.dvc").read_text())["outs"][0]["nfiles"])


WAYS = {
    "visionline_cli": visionline_cli,
    "dvc_cli": dvc_cli,
    "visionline_in_process": visionline_in_process,
    "dvc_in_process": dvc_in_process,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=3, help="Interleaved runs of each; medians reported."
    )
    args = parser.parse_args()
    os.environ.update(DVC_ENV)  # the in-process dvc reads it too
    runs: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="visionline-bench-") as tmp:
        work = Path(tmp)
        images = work / "images"
        make_images(images, args.images, args.size)
        for run in range(args.repeats):
            for way, timer in WAYS.items():
                runs[way].append(timer(images, work, run))
            print(
                f"repeat {run + 1}: " + ", ".join(f"{w} {r[-1][0]:.2f} s" for w, r in runs.items())
            )
        ingested = {
            "visionline_cli": DatasetRepo(Project.load(work / "cli0")).list()[-1].n_images,
            "visionline_in_process": DatasetRepo(Project.load(work / "api0")).list()[-1].n_images,
            "dvc_cli": _dvc_files(work / "dvccli0"),
            "dvc_in_process": _dvc_files(work / "dvcapi0"),
        }
    if len(set(ingested.values())) != 1 or args.images not in ingested.values():
        raise SystemExit(f"The four ways ingested different numbers of images: {ingested}")
    median = {way: statistics.median(s for s, _ in r) for way, r in runs.items()}
    summary = {
        way: {
            "seconds_median": round(median[way], 3),
            "images_per_s": round(args.images / median[way], 1),
            "runs_wall_cpu_s": [[round(s, 2), round(c, 2)] for s, c in r],
        }
        for way, r in runs.items()
    }
    cli_ratio = median["dvc_cli"] / median["visionline_cli"]
    api_ratio = median["dvc_in_process"] / median["visionline_in_process"]
    vl_rate = args.images / median["visionline_in_process"]

    cpu = {way: statistics.median(c for _, c in r) for way, r in runs.items()}

    def row(how: str, way: str, ratio: float) -> dict[str, str]:
        ours, theirs = f"visionline_{way}", f"dvc_{way}"
        return {
            "benchmark": "ingest",
            "measure": f"{args.images:,} small JPEGs, {how}; wall (CPU seconds)",
            "visionline": f"{args.images / median[ours]:,.0f} img/s ({cpu[ours]:.1f} CPU s; "
            "hash, full decode, pHash, store, manifest)",
            "peer": f"dvc add: {args.images / median[theirs]:,.0f} img/s ({cpu[theirs]:.1f} CPU s; "
            "md5 + copy)",
            "result": f"{ratio:.2f}x wall, {cpu[theirs] / cpu[ours]:.2f}x CPU",
        }

    result = {
        "benchmark": "ingest",
        "images": args.images,
        "image_size": args.size,
        "repeats": args.repeats,
        "ingested_images": ingested,
        **summary,
        "speedup_vs_dvc_cli": round(cli_ratio, 2),
        "speedup_vs_dvc_in_process": round(api_ratio, 2),
        "target_images_per_s": 300,
        "meets_target": vl_rate >= 300 and cli_ratio > 1 and api_ratio > 1,
        "notes": "visionline: read + sha256 + full decode (corrupt/bomb check) + pHash + blob store + "
        "Parquet manifest (the rotation-proof near-duplicate search is left to `data dedupe` and "
        "`data split`, which cache its features per blob); dvc add: md5 + cache copy. CLI: a new process "
        "each (`visionline data add DIR --project P`, `dvc add -q images`), start-up and imports "
        "included for both. In process: `DatasetRepo(Project.load(P)).add(DIR)` and "
        "`dvc.repo.Repo(R).add('images')`, opening the project/repository included, imports "
        "excluded (both already imported). Runs interleaved, medians reported; CPU seconds include "
        "threads and child processes because the dev machine is shared.",
        "readme": [
            row("as CLI commands (start-up included)", "cli", cli_ratio),
            row("in process (Python API)", "in_process", api_ratio),
        ],
    }
    path = write_result("ingest", result)
    for way, s in summary.items():
        print(f"{way:<22} {s['images_per_s']:>8,.0f} images/s (median {s['seconds_median']:.2f} s)")
    print(f"visionline / dvc: CLI {cli_ratio:.2f}x, in process {api_ratio:.2f}x -> {path}")


if __name__ == "__main__":
    main()
