"""A small real anomaly detector on synthetic apples, and its signed edge bundle.

Several test folders (export, serve, visionline_edge, cli, monitor) take an anomaly bundle
through the lifecycle; they share this one recipe: 40 apples at 64 px with defect masks, fitted
on the train split's good apples, thresholded on the val split's good ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from visionline.config import Project, init_project

IMAGE_SIZE = 64


@dataclass(frozen=True)
class FittedApples:
    project: Project
    dataset: str
    model: Path
    raw: Path


def fitted_apples(root: Path, images: int = 40, threshold_frr: float | None = None) -> FittedApples:
    """A project with a split apple dataset and an anomaly model fitted on it (not tracked).

    `threshold_frr` sets the goals' false-reject budget (the operating rate follows it). With
    ~8 val goods the default's conformal rank is the highest good score, and this coarse 64 px
    detector scores some good apples as high as any defect, so a test that needs flagged regions
    lowers the threshold.
    """
    from visionline.anomaly import AnomalyConfig, fit_anomaly
    from visionline.data import DatasetRepo
    from visionline.synth import SynthConfig, generate_dataset

    init_project(root, name="apples")
    if threshold_frr is not None:
        goals_file = root / "visionline.yaml"
        text = goals_file.read_text().replace(
            "max_false_reject_rate: 0.02", f"max_false_reject_rate: {threshold_frr}"
        )
        goals_file.write_text(text)
    project = Project.load(root)
    raw = root / "raw"
    generate_dataset(
        SynthConfig(size=IMAGE_SIZE, seed=11, defect_rate=0.3), raw, images, masks=True
    )
    repo = DatasetRepo(project)
    added = repo.add(raw, name="apples", masks=True)
    split = repo.split(added.version.id, val=0.3, test=0.2, seed=0)
    config = AnomalyConfig(
        image_size=IMAGE_SIZE,
        batch_size=16,
        coreset_ratio=0.1,
        max_bank=256,
        autocontrast=False,
        stages=[2, 4],  # finer than the defaults' stride-16 stages: these apples are only 64 px
        neighbourhood=3,
        # one view: averaged with its mirror's, no map region of this coarse 64 px detector rose
        # above the threshold, and the label-push test needs flagged regions
        flip_average=False,
    )
    fit = fit_anomaly(config, split.id, project, root / "run", progress=False, track=False)
    return FittedApples(project, split.id, fit.model_path, raw)


@pytest.fixture(scope="session")
def shared_fitted_apples(tmp_path_factory: pytest.TempPathFactory) -> FittedApples:
    """`fitted_apples` with the default recipe, fitted once a session for every test folder that
    only reads it (the export and serve tests each take their own bundle from it); registered as
    a fixture by tests/conftest.py alone, so the session holds one."""
    return fitted_apples(tmp_path_factory.mktemp("anomaly-apples") / "project")


def export_bundle(fitted: FittedApples, out: Path, key: Path | None = None, version: str = "1"):
    """The signed anomaly bundle (`ExportResult`) of `fitted`, with parity, metrics and reference."""
    from visionline.export import ExportConfig, export_model

    config = ExportConfig(data=fitted.dataset, version=version)
    return export_model(fitted.model, out, config, fitted.project, key, progress=False)
