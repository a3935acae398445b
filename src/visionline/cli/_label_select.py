"""`visionline label select`: choose which images to label next, and optionally push them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from visionline.cli._common import ProjectOption, console, load_project
from visionline.data._selection import Strategy

__all__ = ["select_command"]


def _predictions(path: Path, classes: list[str]) -> dict[str, Any]:
    """Pre-annotations (model class + score) from a `visionline score` file."""
    import pandas as pd

    from visionline.data._labelstudio import ModelPrediction

    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if "predicted_class" not in frame.columns:
        return {}
    found: dict[str, ModelPrediction] = {}
    for row in frame.to_dict("records"):
        choice = row.get("predicted_class")
        if not isinstance(row.get("sha256"), str) or choice not in classes:
            continue
        score = row.get(f"p_{choice}", row.get("defect_score"))
        found[row["sha256"]] = ModelPrediction(str(choice), float(score), path.stem)
    return found


def _since(text: str | None) -> float | None:
    from datetime import datetime

    from visionline.errors import ConfigError

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is not an ISO date/time; write e.g. 2026-12-01 or 2026-12-01T08:00."
        ) from None


def _from_monitor(
    project: Any,
    repo: Any,
    strategy: Strategy,
    budget: int,
    since: str | None,
    seed: int,
    out: Path | None,
    push: bool,
    url: str,
    api_key: str | None,
    title: str | None,
    document_root: Path | None,
) -> None:
    """Pick kept, unlabelled images from the prediction log; push them as new images."""
    from visionline.data import DatasetVersion, ImageRecord
    from visionline.data._labelstudio import ModelPrediction, build_tasks
    from visionline.data._selection_monitor import select_from_monitor
    from visionline.monitor import MonitorDB
    from visionline.preprocessing import decode_image

    name = project.config.name
    picks, pool = select_from_monitor(
        MonitorDB(project.monitor_db_url), name, strategy, budget, since=_since(since), seed=seed
    )
    target = out or project.root / "reports" / f"selection-monitor-{strategy.value}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "prediction_id": p.prediction_id,
            "sha256": p.sha256,
            "predicted_class": p.predicted_class,
            "score": round(p.score, 6),
            "reason": p.reason,
        }
        for p in picks
    ]
    target.write_text(
        json.dumps(
            {
                "source": "monitor",
                "model": name,
                "since": since,
                "strategy": strategy.value,
                "budget": budget,
                "pool": pool,
                "selected": rows,
            },
            indent=1,
        )
    )
    for row in rows[:10]:
        console.print(f"  prediction {row['prediction_id']}: {row['reason']}", highlight=False)
    console.print(
        f"[green]Selected[/green] {len(rows)} of {pool} kept, unlabelled logged images by "
        f"{strategy.value}; wrote {target}."
    )
    if not push:
        return
    records = []
    for pick in picks:
        data = repo.blobs.get(pick.sha256)
        image = decode_image(data)
        records.append(
            ImageRecord(
                sha256=pick.sha256,
                path=f"monitor/{pick.prediction_id}",
                bytes=len(data),
                width=image.width,
                height=image.height,
                mode=image.mode,
                label="unlabelled",
                subtype=None,
                source="monitor",
                split=None,
            )
        )
    version = DatasetVersion(
        f"monitor-{strategy.value}", "monitor", None, "", {}, len(records), lambda: records
    )
    predictions = {p.sha256: ModelPrediction(p.predicted_class, p.score, name) for p in picks}
    tasks, n_predicted = build_tasks(
        version,
        repo,
        project.config,
        document_root=document_root,
        predictions=predictions,
        model_version=name,
    )
    from visionline.cli._label import push_tasks

    push_tasks(
        project,
        version,
        tasks,
        n_predicted,
        name,
        url,
        api_key or "",
        title or f"{name} monitor selection",
        document_root,
    )


def select_command(
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset version id or unique prefix.", show_default=False),
    ] = None,
    budget: Annotated[int, typer.Option(help="How many images to pick.")] = 100,
    from_monitor: Annotated[
        bool,
        typer.Option(
            "--from-monitor",
            help="Pick among images the prediction log kept and nobody labelled yet (instead "
            "of --data); --strategy drift takes them from drifted windows.",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="With --from-monitor: only predictions since this ISO date/time.",
            show_default=False,
        ),
    ] = None,
    strategy: Annotated[
        Strategy,
        typer.Option(
            help="uncertainty: scores nearest the threshold; disagreement: two models decide "
            "differently; diversity: k-centre on image embeddings; mixed (default, the best "
            "on both data sets of benchmarks/active_learning.py): half uncertainty, half "
            "diversity; random: the baseline."
        ),
    ] = Strategy.MIXED,
    scores: Annotated[
        list[Path] | None,
        typer.Option(
            "--scores",
            help="`visionline score V --out FILE` output (Parquet/CSV); twice for disagreement.",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Decision threshold (default: from the scores' .summary.json).", show_default=False
        ),
    ] = None,
    include_labelled: Annotated[
        bool, typer.Option(help="Pick among labelled images too (relabelling).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random strategy.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Selection JSON (default: reports/selection-<strategy>.json).",
            show_default=False,
        ),
    ] = None,
    push: Annotated[bool, typer.Option(help="Send the selection to Label Studio.")] = False,
    url: Annotated[
        str,
        typer.Option(
            "--url", envvar="LABEL_STUDIO_URL", help="Label Studio base URL ($LABEL_STUDIO_URL)."
        ),
    ] = "http://localhost:8080",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="LABEL_STUDIO_API_KEY",
            help="Access token ($LABEL_STUDIO_API_KEY).",
            show_default=False,
        ),
    ] = None,
    project_title: Annotated[
        str | None,
        typer.Option(help="Label Studio project title (default: the version).", show_default=False),
    ] = None,
    document_root: Annotated[
        Path | None,
        typer.Option(
            "--document-root", help="Label Studio's local-files document root.", show_default=False
        ),
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    """Pick the images whose labels would teach the model most and write them as JSON.

    With --push they go to Label Studio, with the model's class and score as pre-annotations.
    """
    from visionline.data import DatasetRepo, DatasetVersion
    from visionline.data._labelstudio import build_tasks, is_labelled
    from visionline.data._selection import load_scores, pixel_embeddings, select
    from visionline.errors import ConfigError

    project = load_project(project_dir)
    if push and not api_key:
        raise ConfigError(
            "--push needs Label Studio's access token; put it in LABEL_STUDIO_API_KEY (or "
            "--api-key) from the server you started with 'label-studio start'."
        )
    repo = DatasetRepo(project)
    if from_monitor == (data is not None):
        raise ConfigError("Pass either --data V or --from-monitor, to say where to pick from.")
    if from_monitor:
        _from_monitor(
            project,
            repo,
            strategy,
            budget,
            since,
            seed,
            out,
            push,
            url,
            api_key,
            project_title,
            document_root,
        )
        return
    version = repo.get(data)
    pool = [r for r in version.records if include_labelled or not is_labelled(r, project.config)]
    labelled = [r for r in version.records if is_labelled(r, project.config)]
    models = [load_scores(path, threshold) for path in scores or []]
    pool_scores = []
    for model in models:
        missing = [r.path for r in pool if r.sha256 not in model.scores]
        if missing:
            raise ConfigError(
                f"Scores {model.name} lack {len(missing)} images of the pool (e.g. {missing[0]}); "
                f"score version {version.short_id} again with `visionline score`."
            )
        pool_scores.append([model.scores[r.sha256] for r in pool])
    embeddings = labelled_embeddings = None
    if strategy in (Strategy.DIVERSITY, Strategy.MIXED) and pool:
        embeddings = pixel_embeddings(pool + ([] if include_labelled else labelled), repo.blobs)
        labelled_embeddings = embeddings[len(pool) :]
        embeddings = embeddings[: len(pool)]
    import numpy as np

    chosen = select(
        strategy,
        budget,
        n_pool=len(pool),
        scores=[np.asarray(s) for s in pool_scores],
        models=models,
        embeddings=embeddings,
        labelled_embeddings=labelled_embeddings,
        seed=seed,
    )
    picked = [pool[i] for i in chosen.indices]
    rows = [
        {"sha256": r.sha256, "path": r.path, "reason": reason}
        for r, reason in zip(picked, chosen.reasons, strict=True)
    ]
    target = out or project.root / "reports" / f"selection-{strategy.value}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps(
            {
                "version": version.id,
                "strategy": strategy.value,
                "budget": budget,
                "pool": len(pool),
                "selected": rows,
            },
            indent=1,
        )
    )
    for row in rows[:10]:
        console.print(f"  {row['path']}: {row['reason']}", highlight=False)
    console.print(
        f"[green]Selected[/green] {len(rows)} of {len(pool)} pool images of version "
        f"{version.short_id} by {strategy.value}; wrote {target}."
    )
    if push:
        from visionline.cli._label import push_tasks

        subset = DatasetVersion(
            version.id,
            version.name,
            version.parent,
            version.created_at,
            version.metadata,
            len(picked),
            lambda: picked,
        )
        predictions = _predictions(scores[0], project.config.model_classes()) if scores else None
        model_version = scores[0].stem if scores else "visionline"
        tasks, n_predicted = build_tasks(
            subset,
            repo,
            project.config,
            document_root=document_root,
            predictions=predictions,
            model_version=model_version,
        )
        push_tasks(
            project,
            version,
            tasks,
            n_predicted,
            model_version,
            url,
            api_key or "",
            project_title,
            document_root,
        )
