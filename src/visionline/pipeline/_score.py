"""Batch scoring: an edge bundle over a dataset version or a folder of images, on every core.

One `_BatchScorer` runs in every worker, either in a process pool (the `local` executor) or
as Ray Data actors (the `ray` executor). Each worker loads the bundle's ONNX model once with one
intra-op thread, so the workers (not threads) fill the cores and both executors give identical
rows. An image that cannot be read or decoded becomes a row with an `error`; it never fails the job.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.config import GOOD_CLASS, Executor, Project
from visionline.errors import (
    ConfigError,
    DataError,
    NotFoundError,
    ServiceUnavailableError,
    VisionlineError,
)

if TYPE_CHECKING:
    import pandas as pd

    from visionline.evaluate import ValidatedRates

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_BATCH_SIZE = 32
CONFIDENCE = 0.90
_ITEM_TEXT = ("path", "file", "sha256", "label", "split")


@dataclass(frozen=True)
class ScoreSummary:
    """What a scoring run found: counts, the flagged share and the estimated true defect rate."""

    images: int
    failed: int
    flagged: int
    flagged_rate: float | None
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    corrected: bool
    labelled: int = 0
    n_defect: int = 0
    n_good: int = 0
    detected: int = 0
    false_rejects: int = 0
    recall: float | None = None
    false_reject_rate: float | None = None

    @property
    def scored(self) -> int:
        return self.images - self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreResult:
    """The rows (one per image, in source order), their summary and where they were written."""

    rows: pd.DataFrame
    summary: ScoreSummary
    output: Path
    bundle: str
    executor: Executor
    workers: int


@dataclass(frozen=True)
class _Source:
    name: str
    items: list[dict[str, Any]]
    blob_store: str | None


# --- what to score --------------------------------------------------------------------------------
def _version_key(name: str) -> tuple[int, tuple[int, ...], str]:
    parts = name.split(".")
    if all(part.isdigit() for part in parts):
        return (1, tuple(int(part) for part in parts), "")
    return (0, (), name)


def _versions(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if p.is_dir() and (p / "bundle.json").is_file()]
    return sorted(found, key=lambda p: _version_key(p.name))


def _models(repository: Path) -> list[Path]:
    if not repository.is_dir():
        return []
    return sorted(p for p in repository.iterdir() if p.is_dir() and _versions(p))


def resolve_bundle(bundle: Path | None, project: Project | None = None) -> Path:
    """A bundle directory or archive; a model folder `REPO/<model>` gives its highest version.

    Without `bundle`, the project's model repository must hold exactly one model.
    """
    if bundle is None:
        if project is None:
            raise ConfigError("No --bundle given and no project found; pass --bundle BUNDLE_DIR.")
        repository = project.path(project.config.pipeline.deploy.repository)
        models = _models(repository)
        if len(models) != 1:
            raise ConfigError(
                f"{repository} holds {len(models)} models, so the bundle is ambiguous; "
                "pass --bundle REPO/<model>[/<version>]."
            )
        return _versions(models[0])[-1]
    if (bundle / "bundle.json").is_file() or (
        bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz"))
    ):
        return bundle
    if bundle.is_dir():
        versions = _versions(bundle)
        if versions:
            return versions[-1]
        models = _models(bundle)
        if len(models) == 1:
            return _versions(models[0])[-1]
        if models:
            raise ConfigError(
                f"{bundle} holds {len(models)} models; pass --bundle {bundle}/<model>."
            )
    raise NotFoundError(
        f"No bundle at {bundle}; pass a bundle directory, its .tar.gz, or a model folder REPO/<model>."
    )


def _directory_items(directory: Path) -> list[dict[str, Any]]:
    files = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    return [
        {
            "index": i,
            "path": p.relative_to(directory).as_posix(),
            "file": str(p.resolve()),
            "sha256": None,
            "label": None,
            "split": None,
        }
        for i, p in enumerate(files)
    ]


def _resolve_source(source: str | Path, project: Project | None, split: str | None) -> _Source:
    path = Path(source)
    if path.is_dir():
        if split is not None:
            raise ConfigError(
                f"--split applies to a dataset version, not to the folder {path}; drop --split."
            )
        items = _directory_items(path)
        if not items:
            raise DataError(
                f"No images ({', '.join(IMAGE_SUFFIXES)}) in {path} or its subfolders; "
                "pass a folder that holds images."
            )
        return _Source(path.resolve().name, items, None)
    if path.is_file():
        raise DataError(f"{path} is a file; pass a folder of images or a dataset version id.")
    if project is None:
        raise NotFoundError(
            f"No image folder {source} and no project to find a dataset version in; pass an "
            "existing folder, or a version id with -p PROJECT."
        )
    from visionline.data import DatasetRepo

    repo = DatasetRepo(project)
    try:
        version = repo.get(str(source))
    except NotFoundError:
        raise NotFoundError(
            f"No image folder or dataset version '{source}'; pass an existing folder or an id "
            "from 'visionline data list'."
        ) from None
    records = version.split_records(split) if split else version.records
    if not records:
        raise DataError(
            f"Dataset version {version.short_id} has no {split or ''} images; pick another "
            "split or split the version first with 'visionline data split'."
        )
    items = [
        {
            "index": i,
            "path": r.path,
            "file": None,
            "sha256": r.sha256,
            "label": r.model_class,
            "split": r.split,
        }
        for i, r in enumerate(records)
    ]
    name = version.short_id + (f"-{split}" if split else "")
    return _Source(name, items, repo.blobs.uri)


# --- the worker --------------------------------------------------------------------------------
class _BatchScorer:
    """Loads the bundle's model once; scores lists of items (pool) or pandas batches (Ray Data)."""

    def __init__(self, manifest: dict[str, Any], blob_store: str | None = None) -> None:
        from visionline.data import BlobStore
        from visionline_edge import EdgeModel

        self.model = EdgeModel(manifest, threads=1)
        self.blobs = BlobStore(blob_store) if blob_store else None

    def _pixels(self, item: dict[str, Any]) -> tuple[str, np.ndarray]:
        from visionline.preprocessing import decode_image

        if item["file"] is None:
            data = self.blobs.get(item["sha256"])  # type: ignore[union-attr]
        else:
            data = Path(item["file"]).read_bytes()
        sha = item["sha256"] or hashlib.sha256(data).hexdigest()
        image = decode_image(data, self.model.max_pixels)
        return sha, self.model.preprocessing.to_uint8(image)

    def score(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One row per item, in order; unreadable images get an error and no prediction."""
        classes = self.model.classes
        rows: list[dict[str, Any]] = []
        pixels: list[np.ndarray] = []
        decoded: list[dict[str, Any]] = []
        for item in items:
            row = {key: item[key] for key in ("index", "path", "sha256", "label", "split")}
            row.update(
                predicted_class=None,
                decision=None,
                **{f"p_{name}": float("nan") for name in classes},
                defect_score=float("nan"),
                flagged=False,
                error=None,
            )
            if self.model.kind == "anomaly":  # the detector's raw score beside the normalised one
                row["anomaly_score"] = float("nan")
            try:
                row["sha256"], hwc = self._pixels(item)
            except VisionlineError as exc:
                row["error"] = str(exc)
            except (OSError, ValueError) as exc:
                row["error"] = (
                    f"Image cannot be read ({type(exc).__name__}: {exc}); check the file."
                )
            else:
                pixels.append(hwc)
                decoded.append(row)
            rows.append(row)
        if pixels:
            found = self.model.predict_array(self.model.preprocessing.normalize(np.stack(pixels)))
            for row, prediction in zip(decoded, found):
                row["predicted_class"] = prediction.predicted_class
                row["decision"] = prediction.decision
                for name, p in zip(classes, prediction.probabilities):
                    row[f"p_{name}"] = float(p)
                row["defect_score"] = prediction.defect_score
                if prediction.anomaly_score is not None:
                    row["anomaly_score"] = prediction.anomaly_score
            for row, flag in zip(decoded, found.flagged):
                row["flagged"] = bool(flag)
        return rows

    def __call__(self, batch: pd.DataFrame) -> dict[str, list[Any]]:
        """Ray Data entry point: a pandas batch of items → columns of rows."""
        items = [
            {
                "index": int(record["index"]),
                **{k: record[k] if isinstance(record[k], str) else None for k in _ITEM_TEXT},
            }
            for record in batch.to_dict("records")
        ]
        rows = self.score(items)
        return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


_WORKER: _BatchScorer | None = None


def _init_worker(manifest: dict[str, Any], blob_store: str | None) -> None:
    global _WORKER
    _WORKER = _BatchScorer(manifest, blob_store)


def _score_chunk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _WORKER.score(items)  # type: ignore[union-attr]


# --- executors ---------------------------------------------------------------------------------
@contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("Scoring images", total=total)
        yield lambda n: bar.advance(task, n)


def _run_local(
    source: _Source, manifest: dict[str, Any], workers: int, batch_size: int, show: bool
) -> list[dict[str, Any]]:
    items = source.items
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    # Built here first so a model that cannot load fails once, with its own message.
    scorer = _BatchScorer(manifest, source.blob_store)
    rows: list[dict[str, Any]] = []
    with _progress(len(items), show) as advance:
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                rows.extend(scorer.score(chunk))
                advance(len(chunk))
            return rows
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        # spawn: ONNX Runtime is not fork-safe. A dead worker breaks the pool instead of hanging it.
        pool = ProcessPoolExecutor(
            min(workers, len(chunks)),
            multiprocessing.get_context("spawn"),
            _init_worker,
            (manifest, source.blob_store),
        )
        try:
            with pool:
                for chunk_rows in pool.map(_score_chunk, chunks):
                    rows.extend(chunk_rows)
                    advance(len(chunk_rows))
        except BrokenProcessPool as exc:
            raise ServiceUnavailableError(
                "A scoring worker process died (out of memory, or started from a script without a "
                "main guard); call score() under 'if __name__ == \"__main__\":' or pass workers=1."
            ) from exc
    return rows


def _run_ray(
    source: _Source,
    manifest: dict[str, Any],
    workers: int | None,
    batch_size: int,
    address: str | None,
    show: bool,
) -> tuple[list[dict[str, Any]], int]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "The ray executor needs Ray; install it with pip install 'visionline[ray]' or pass "
            "--executor local."
        ) from None
    started = not ray.is_initialized()
    if started:
        where = {"address": address} if address else {"num_cpus": workers or os.cpu_count()}
        try:
            ray.init(include_dashboard=False, **where)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ServiceUnavailableError(
                f"Cannot start or reach Ray at {address or 'this machine'} ({exc}); start the "
                "cluster or fix pipeline.ray_address."
            ) from exc
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        concurrency = max(1, min(workers or cpus, cpus, len(source.items)))
        ray.data.DataContext.get_current().enable_progress_bars = show
        dataset = ray.data.from_items(source.items).map_batches(
            _BatchScorer,
            fn_constructor_kwargs={"manifest": manifest, "blob_store": source.blob_store},
            batch_size=batch_size,
            batch_format="pandas",
            concurrency=concurrency,
            num_cpus=1,
        )
        return dataset.take_all(), concurrency
    finally:
        if started:
            ray.shutdown()


def _frame(rows: list[dict[str, Any]], classes: list[str]) -> pd.DataFrame:
    """Rows in source order with one column layout whichever executor produced them."""
    import pandas as pd

    columns = [
        "path", "sha256", "label", "split", "predicted_class", "decision",
        *(f"p_{name}" for name in classes), "defect_score", "flagged", "error",
    ]  # fmt: skip
    if rows and "anomaly_score" in rows[0]:  # an anomaly bundle's raw detector score
        columns.insert(columns.index("defect_score") + 1, "anomaly_score")
    ordered = sorted(rows, key=lambda row: int(row["index"]))
    frame = pd.DataFrame([[row[c] for c in columns] for row in ordered], columns=columns)
    frame["flagged"] = frame["flagged"].astype(bool)
    return frame


# --- summary -----------------------------------------------------------------------------------
def bundle_rates(manifest: dict[str, Any]) -> ValidatedRates | None:
    """The validated recall/false-reject counts of the bundle's deployed model, when it has them."""
    from visionline.evaluate import ValidatedRates

    metrics = (manifest.get("metrics") or {}).get(manifest.get("deployed"), {})
    try:
        n_defect, n_good = int(metrics["n_defect"]), int(metrics["n_good"])
        return ValidatedRates(
            tp=round(float(metrics["defect_recall"]) * n_defect),
            n_defect=n_defect,
            fp=round(float(metrics["false_reject_rate"]) * n_good),
            n_good=n_good,
            threshold=float(manifest["threshold"]),
        )
    except (KeyError, TypeError, ValueError, DataError):
        return None


def summarise(
    rows: pd.DataFrame,
    rates: ValidatedRates | None = None,
    good_class: str = GOOD_CLASS,
    confidence: float = CONFIDENCE,
) -> ScoreSummary:
    """Counts, flagged share, true defect rate with an interval, and realised rates from labels.

    With validated rates the flagged share is corrected (Rogan–Gladen, `estimate_prevalence`);
    without them the estimate is the flagged share with its exact (Clopper–Pearson) interval.
    """
    from visionline.evaluate import clopper_pearson, estimate_prevalence

    ok = rows["error"].isna().to_numpy()
    flags = rows["flagged"].to_numpy(dtype=bool) & ok
    n, flagged = int(ok.sum()), int(flags.sum())
    estimate = low = high = flagged_rate = None
    if n:
        flagged_rate = flagged / n
        if rates is not None:
            found = estimate_prevalence(flagged, n, rates, confidence)
            estimate, low, high = found.estimate, found.low, found.high
        else:
            estimate = flagged_rate
            low, high = clopper_pearson(flagged, n, confidence)
    labelled = ok & rows["label"].notna().to_numpy()
    is_defect = labelled & (rows["label"].to_numpy(dtype=object) != good_class)
    is_good = labelled & ~is_defect
    n_defect, n_good = int(is_defect.sum()), int(is_good.sum())
    detected, false_rejects = int((flags & is_defect).sum()), int((flags & is_good).sum())
    return ScoreSummary(
        images=len(rows),
        failed=len(rows) - n,
        flagged=flagged,
        flagged_rate=flagged_rate,
        estimate=estimate,
        low=low,
        high=high,
        confidence=confidence,
        corrected=rates is not None and n > 0,
        labelled=int(labelled.sum()),
        n_defect=n_defect,
        n_good=n_good,
        detected=detected,
        false_rejects=false_rejects,
        recall=detected / n_defect if n_defect else None,
        false_reject_rate=false_rejects / n_good if n_good else None,
    )


# --- the job -----------------------------------------------------------------------------------
def _output_path(out: Path | None, project: Project | None, name: str) -> Path:
    if out is None:
        reports = project.reports_dir if project is not None else Path("reports")
        return reports / f"score-{name}.parquet"
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"--out {out} must end in .parquet or .csv; rename it.")
    return out


def _write(rows: pd.DataFrame, output: Path, record: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        rows.to_csv(output, index=False)
    else:
        rows.to_parquet(output, index=False)
    sidecar = output.with_name(output.name.rsplit(".", 1)[0] + ".summary.json")
    sidecar.write_text(json.dumps(record, indent=2) + "\n")


def score(
    source: str | Path,
    bundle: Path | None = None,
    *,
    project: Project | None = None,
    split: str | None = None,
    out: Path | None = None,
    executor: Executor | str | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pubkey: Path | None = None,
    trust_store: Path | None = None,
    require_signature: bool = False,
    ray_address: str | None = None,
    show_progress: bool = False,
) -> ScoreResult:
    """Score every image of a folder or dataset version with a bundle; write rows and a summary.

    The executor, and for Ray the cluster address, default to the project's `pipeline:` settings.
    The bundle is verified by the edge runtime first (with `pubkey`/`trust_store`, its signature
    too; `require_signature` refuses to score without trusted keys).
    """
    from visionline_edge import release_unpacked, verify_bundle

    try:
        chosen = Executor(executor) if executor is not None else None
    except ValueError:
        raise ConfigError(
            f"Unknown executor '{executor}'; use one of {', '.join(e.value for e in Executor)}."
        ) from None
    settings = project.config.pipeline if project is not None else None
    chosen = chosen or (settings.executor if settings else Executor.LOCAL)
    address = ray_address or (settings.ray_address if settings else None)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
    path = resolve_bundle(bundle, project)
    found = _resolve_source(source, project, split)
    output = _output_path(out, project, found.name)
    manifest = verify_bundle(
        path, pubkey, trust_store=trust_store, require_signature=require_signature
    )
    try:
        if chosen is Executor.RAY:
            raw, used = _run_ray(found, manifest, workers, batch_size, address, show_progress)
        else:
            used = workers or os.cpu_count() or 1
            raw = _run_local(found, manifest, used, batch_size, show_progress)
    finally:  # a .tar.gz bundle was unpacked for the workers; they are done with it
        release_unpacked(manifest)
    rows = _frame(raw, list(manifest["classes"]))
    summary = summarise(rows, bundle_rates(manifest), good_class=manifest["classes"][0])
    name = f"{manifest['name']} v{manifest['version']}"
    _write(
        rows,
        output,
        {
            "source": str(source),
            "split": split,
            "bundle": {"name": manifest["name"], "version": manifest["version"], "path": str(path)},
            "threshold": float(manifest["threshold"]),
            "executor": chosen.value,
            "workers": used,
            "summary": summary.to_dict(),
        },
    )
    return ScoreResult(rows, summary, output, name, chosen, used)
