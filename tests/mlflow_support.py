"""An empty MLflow tracking database, migrated once per test process and copied into projects.

MLflow creates a new SQLite store by running its whole Alembic migration history, about a
second of CPU and, with a commit per migration, up to several seconds of disk syncs on a busy
machine. Test projects are throwaway, so the builders start each one from a copy of a store
that MLflow itself created and migrated; MLflow opens it as it opens any existing store.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

__all__ = ["seed_tracking_db"]


@functools.cache
def _template() -> Path:
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="visionline-mlflow-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # a cache for this process only
    path = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def seed_tracking_db(project: object) -> None:
    """Copy the migrated empty store to `project`'s sqlite tracking URI unless one exists there."""
    uri = project.tracking_uri  # type: ignore[attr-defined]
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    target = Path(uri.removeprefix(prefix))
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(), target)
