"""Streams of rendered apples: the seeded line, labelled datasets and supplier deliveries.

Image `index` of a stream depends only on (seed, stream, index), so any slice of a stream can be
re-rendered identically, and a dataset and a delivery stream with the same seed never share images.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionline.errors import ConfigError
from visionline.synth._config import Drift, Subtype, SynthConfig
from visionline.synth._render import AppleRenderer, AppleSpec, RenderResult

GOOD = "good"
MARKER = "synth.json"
"""Written into every output folder; `force` only ever clears folders that hold it."""

_STREAM_DATASET, _STREAM_DELIVERIES, _STREAM_PREVIEW = 1, 2, 3


class SynthLine:
    """The seeded packing line: renders image `index` of a stream with a given ground truth."""

    def __init__(self, config: SynthConfig, stream: int = _STREAM_DATASET) -> None:
        self.config = config
        self.stream = stream
        self.renderer = AppleRenderer(config.size)

    def spec(
        self,
        index: int,
        subtype: Subtype | None,
        variety_weights: np.ndarray | None = None,
    ) -> tuple[AppleSpec, np.random.Generator]:
        """The spec of image `index` and the generator the renderer continues with."""
        return line_spec(self.config, self.stream, index, subtype, variety_weights)

    def render(
        self, index: int, subtype: Subtype | None, variety_weights: np.ndarray | None = None
    ) -> RenderResult:
        """Render image `index` with the given defect subtype (None: a good apple)."""
        spec, rng = self.spec(index, subtype, variety_weights)
        return self.renderer.render_arrays(rng, spec)


def line_spec(
    cfg: SynthConfig,
    stream: int,
    index: int,
    subtype: Subtype | None,
    variety_weights: np.ndarray | None = None,
) -> tuple[AppleSpec, np.random.Generator]:
    """Variety, severity and drift of image `index` of a stream, and its generator."""
    rng = np.random.default_rng([cfg.seed, stream, index])
    u_variety, u_new, u_severity, u_hard = rng.random(4)
    weights = (
        np.full(len(cfg.varieties), 1.0 / len(cfg.varieties))
        if variety_weights is None
        else np.asarray(variety_weights, dtype=float) / np.sum(variety_weights)
    )
    variety = cfg.varieties[
        min(int(np.searchsorted(np.cumsum(weights), u_variety)), len(cfg.varieties) - 1)
    ]
    drift, strength = None, 0.0
    if cfg.drift is not None:
        strength = cfg.drift.strength(index)
        drift = cfg.drift.kind if strength > 0 else None
        if drift is Drift.NEW_VARIETY and u_new < 0.8 * strength:
            variety = cfg.new_variety
    severity = cfg.severity_min + (cfg.severity_max - cfg.severity_min) * float(u_severity)
    hard = subtype is not None and severity < 1 / 3 and bool(u_hard < cfg.hard_fraction)
    spec = AppleSpec(
        variety=variety,
        subtype=subtype,
        severity=severity,
        hard=hard,
        camera=cfg.camera,
        drift=drift,
        drift_strength=strength,
        stem_probability=cfg.stem_probability,
        smudge_seed=cfg.seed,
    )
    return spec, rng


def save_jpeg(result: RenderResult, path: Path) -> None:
    """Write the image with the JPEG quality of its camera conditions."""
    result.image().save(path, "JPEG", quality=int(result.metadata["jpeg_quality"]))


def mask_path(image: Path) -> Path:
    """Where a defect image's mask goes: `X_mask.png` beside `X.jpg`, as `data add --masks` reads."""
    return image.with_name(f"{image.stem}_mask.png")


def save_mask(result: RenderResult, path: Path) -> None:
    """The defect's pixels (coverage ≥ 0.5) as a white-on-black PNG the size of the image."""
    pixels = np.where(result.defect_mask >= 0.5, 255, 0).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, "PNG")


def prepare_output(out: Path, force: bool) -> Path:
    """An empty output folder; `force` clears only a folder that synth wrote before."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; pass a folder path to --out.")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{out} is not empty; choose a new --out folder or pass --force.")
        if not (out / MARKER).exists():
            raise ConfigError(
                f"{out} was not written by visionline synth, so --force will not clear it; "
                "choose a new --out folder."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _progress(enabled: bool, total: int, description: str):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    progress.add_task(description, total=total)
    return progress


def _render_all(
    line: SynthLine,
    jobs: list[tuple[int, Subtype | None, Path, dict]],
    progress: bool,
    description: str,
    variety_weights: list[np.ndarray | None] | None = None,
    masks: bool = False,
) -> Iterator[dict]:
    """Render and save each (index, subtype, path, extra) job; yield its manifest row. With
    `masks`, each defect image also gets its mask file (`mask_path`), named in the row."""
    with _progress(progress, len(jobs), description) as bar:
        for n, (index, subtype, path, extra) in enumerate(jobs):
            weights = None if variety_weights is None else variety_weights[n]
            result = line.render(index, subtype, weights)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(result, path)
            row = {"index": index, **extra}
            if masks:
                row["mask"] = ""
                if subtype is not None:
                    save_mask(result, mask_path(path))
                    row["mask"] = mask_path(Path(extra["file"])).as_posix()
            if bar is not None:
                bar.advance(bar.task_ids[0])
            yield {**row, **result.metadata}


def _write_table(rows: list[dict], stem: Path) -> None:
    """The same rows as CSV (for people) and Parquet (for pipelines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(rows[0]) if rows else []
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), stem.with_suffix(".parquet"))


@dataclass(frozen=True)
class DatasetSummary:
    """Where a synthetic dataset went and what is in it."""

    out: Path
    counts: dict[str, int]
    manifest: Path


def generate_dataset(
    config: SynthConfig,
    out: Path,
    n: int,
    force: bool = False,
    progress: bool = False,
    masks: bool = False,
) -> DatasetSummary:
    """An ImageFolder tree (`good/` + one folder per subtype) with exactly round(n × defect
    rate) defects spread evenly over the subtypes, plus `manifest.csv/.parquet` and `synth.json`.
    With `masks`, every defect image gets `<name>_mask.png` beside it (ingest with `--masks`), so
    anomaly maps get pixel metrics."""
    if n < 1:
        raise ConfigError(f"n must be at least 1, not {n}; pass a positive number of images.")
    out = prepare_output(out, force)
    n_defect = round(n * config.defect_rate)
    labels: list[Subtype | None] = [None] * (n - n_defect)
    labels += [config.subtypes[k % len(config.subtypes)] for k in range(n_defect)]
    order = np.random.default_rng([config.seed, _STREAM_DATASET, 2**31]).permutation(n)
    line = SynthLine(config, _STREAM_DATASET)
    jobs = []
    for index in range(n):
        subtype = labels[order[index]]
        folder = GOOD if subtype is None else subtype.value
        rel = f"{folder}/{index:06d}.jpg"
        jobs.append((index, subtype, out / rel, {"file": rel}))
    rows = list(_render_all(line, jobs, progress, "rendering apples", masks=masks))
    counts = {GOOD: n - n_defect} | {
        s.value: sum(1 for label in labels if label is s) for s in config.subtypes
    }
    manifest = out / "manifest.csv"
    _write_table(rows, manifest)
    (out / MARKER).write_text(
        json.dumps(
            {"kind": "dataset", "n": n, "counts": counts, "config": config.model_dump(mode="json")},
            indent=2,
        )
    )
    return DatasetSummary(out, counts, manifest)


@dataclass(frozen=True)
class Supplier:
    """A grower: its defect rate per delivery follows Beta(a, b); its subtype mix and varieties."""

    name: str
    beta_a: float
    beta_b: float
    subtype_mix: dict[str, float]
    varieties: dict[str, float]

    @property
    def mean_rate(self) -> float:
        return self.beta_a / (self.beta_a + self.beta_b)


def _suppliers(config: SynthConfig, count: int) -> list[Supplier]:
    suppliers = []
    for s in range(count):
        rng = np.random.default_rng([config.seed, _STREAM_DELIVERIES, 2**31, s])
        mean, concentration = rng.uniform(0.04, 0.17), rng.uniform(25.0, 70.0)
        mix = rng.dirichlet(np.full(len(config.subtypes), 1.5))
        k = int(rng.integers(1, min(3, len(config.varieties)) + 1))
        grown = rng.choice(len(config.varieties), size=k, replace=False)
        shares = rng.dirichlet(np.full(k, 2.0))
        suppliers.append(
            Supplier(
                name=f"S{s + 1}",
                beta_a=round(mean * concentration, 4),
                beta_b=round((1 - mean) * concentration, 4),
                subtype_mix={t.value: round(float(m), 4) for t, m in zip(config.subtypes, mix)},
                varieties={
                    config.varieties[i].value: round(float(w), 4) for i, w in zip(grown, shares)
                },
            )
        )
    return suppliers


@dataclass(frozen=True)
class DeliveriesSummary:
    """Where a delivery stream went, its suppliers and per-delivery ground truth."""

    out: Path
    suppliers: list[Supplier]
    deliveries: list[dict[str, Any]]
    images: int


MIN_RATE, MAX_RATE = 0.02, 0.25


def generate_deliveries(
    config: SynthConfig,
    out: Path,
    suppliers: int = 3,
    deliveries: int = 10,
    size: int = 500,
    force: bool = False,
    progress: bool = False,
) -> DeliveriesSummary:
    """A stream of deliveries (images in arrival order) from `suppliers` growers.

    Each delivery's defect rate is drawn from its supplier's Beta distribution (clipped to
    2–25 %), split over subtypes by the supplier's mix, and realised exactly: the ground truth
    rate is the count of defect images over `size`. `config.drift` applies by stream index.
    """
    for name, value in (("suppliers", suppliers), ("deliveries", deliveries), ("size", size)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}; pass a positive number.")
    out = prepare_output(out, force)
    growers = _suppliers(config, suppliers)
    order_rng = np.random.default_rng([config.seed, _STREAM_DELIVERIES, 2**31 + 1])
    rounds = -(-deliveries // suppliers)
    order = np.concatenate([order_rng.permutation(suppliers) for _ in range(rounds)])[:deliveries]
    line = SynthLine(config, _STREAM_DELIVERIES)
    jobs, weights, table = [], [], []
    for d, s in enumerate(order):
        grower = growers[int(s)]
        rng = np.random.default_rng([config.seed, _STREAM_DELIVERIES, 2**31 + 2, d])
        rate = float(np.clip(rng.beta(grower.beta_a, grower.beta_b), MIN_RATE, MAX_RATE))
        mix = np.array([grower.subtype_mix[t.value] for t in config.subtypes])
        shares = rng.dirichlet(mix * 30.0 + 0.1)
        counts = rng.multinomial(round(rate * size), shares)
        labels: list[Subtype | None] = [None] * (size - int(counts.sum()))
        for subtype, count in zip(config.subtypes, counts):
            labels += [subtype] * int(count)
        labels = [labels[i] for i in rng.permutation(size)]
        names = list(grower.varieties)
        grown = np.array(list(grower.varieties.values()))  # rounded: renormalise
        main = names[int(rng.choice(len(names), p=grown / grown.sum()))]
        variety_weights = np.array(
            [
                0.9 if v.value == main else 0.1 / max(len(config.varieties) - 1, 1)
                for v in config.varieties
            ]
        )
        delivery = f"D{d + 1:04d}"
        first = len(jobs)
        for k, subtype in enumerate(labels):
            index = first + k
            rel = f"images/{delivery}/{index:06d}.jpg"
            jobs.append(
                (
                    index,
                    subtype,
                    out / rel,
                    {"file": rel, "delivery": delivery, "supplier": grower.name},
                )
            )
            weights.append(variety_weights)
        row: dict[str, Any] = {
            "delivery": delivery,
            "supplier": grower.name,
            "first_index": first,
            "last_index": first + size - 1,
            "n_images": size,
            "main_variety": main,
            "n_defect": int(counts.sum()),
            "defect_rate": round(int(counts.sum()) / size, 6),
        }
        for subtype, count in zip(config.subtypes, counts):
            row[f"rate_{subtype.value}"] = round(int(count) / size, 6)
        row["drift"] = config.drift.kind.value if config.drift else None
        row["drift_strength_first"] = (
            round(config.drift.strength(first), 4) if config.drift else 0.0
        )
        row["drift_strength_last"] = (
            round(config.drift.strength(first + size - 1), 4) if config.drift else 0.0
        )
        table.append(row)
    rows = list(_render_all(line, jobs, progress, "rendering deliveries", weights))
    _write_table(rows, out / "images.csv")
    _write_table(table, out / "deliveries.csv")
    document = {
        "kind": "deliveries",
        "config": config.model_dump(mode="json"),
        "suppliers": [
            {
                "name": g.name,
                "beta_a": g.beta_a,
                "beta_b": g.beta_b,
                "mean_rate": round(g.mean_rate, 6),
                "subtype_mix": g.subtype_mix,
                "varieties": g.varieties,
            }
            for g in growers
        ],
        "deliveries": table,
    }
    (out / "deliveries.json").write_text(json.dumps(document, indent=2))
    (out / MARKER).write_text(json.dumps(document | {"deliveries": len(table)}, indent=2))
    return DeliveriesSummary(out, growers, table, len(jobs))
