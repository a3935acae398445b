"""The prediction log: SQLAlchemy 2 tables and the one class that reads and writes them.

SQLite (WAL, so the dashboard reads while the server writes) is the default; a plant with several
lines points `monitor_db` at PostgreSQL. A record is acknowledged once its transaction committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from visionline.errors import (
    AmbiguousIdError,
    ConfigError,
    NotFoundError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    import pandas as pd

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("ts", Float, nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("route", String(16), nullable=False, default="primary"),
    Column("request_id", String(128)),
    Column("line", String(64)),
    Column("camera", String(64)),
    Column("delivery_id", String(128), index=True),
    Column("supplier_id", String(128), index=True),
    Column("probabilities", JSON, nullable=False),
    Column("predicted_class", String(64), nullable=False),
    Column("defect_score", Float, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("decision", String(64), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("latency_ms", Float),
    Column("brightness", Float),
    Column("contrast", Float),
    Column("sharpness", Float),
    Column("colourfulness", Float),
    Column("embedding", LargeBinary),
    Column("image_sha256", String(64), index=True),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(32), ForeignKey("predictions.id"), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("label", String(64), nullable=False),
    Column("subtype", String(64)),
    Column("source", String(64), nullable=False),
)

drift_windows = Table(
    "drift_windows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("window", Integer, nullable=False),
    Column("start_ts", Float),
    Column("end_ts", Float),
    Column("n", Integer, nullable=False),
    Column("detector", String(32), nullable=False),
    Column("statistic", Float, nullable=False),
    Column("p_value", Float, nullable=False),
    Column("adjusted_p", Float, nullable=False),
    Column("drifted", Boolean, nullable=False),
)

alarms = Table(
    "alarms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("window", Integer, nullable=False),
    Column("detectors", JSON, nullable=False),
    Column("statistics", JSON, nullable=False),
    Column("p_values", JSON, nullable=False),
    Column("cause", Text, nullable=False),
    Column("details", JSON),
)

PREDICTION_COLUMNS = tuple(c.name for c in predictions.columns)


def engine_url(url: str) -> str:
    """Use psycopg 3 for plain `postgresql://` URLs (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    name = url[len("sqlite:///") :].split("?", 1)[0]
    return None if name in ("", ":memory:") else Path(name)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class MonitorDB:
    """Read and write the prediction log, feedback, drift windows and alarms."""

    def __init__(self, url: str, *, must_exist: bool = False, connect_timeout: float = 5.0) -> None:
        self.url = url
        path = _sqlite_file(url)
        if path is not None:
            if must_exist and not path.is_file():
                raise NotFoundError(
                    f"No prediction log at {path}; serve a model with prediction logging "
                    "('visionline serve') or pass --db URL."
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {}
        if url.startswith(("postgresql", "postgres")):
            connect_args["connect_timeout"] = max(1, int(connect_timeout))
        elif path is not None:
            connect_args["check_same_thread"] = False
        try:
            self.engine: Engine = create_engine(
                engine_url(url), connect_args=connect_args, pool_pre_ping=True
            )
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise ConfigError(
                f"Cannot use monitor database URL {url!r} ({exc}); use sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/DB."
            ) from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _on_sqlite_connect)
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ServiceUnavailableError(
                f"Cannot reach the monitor database {self.safe_url} ({type(exc).__name__}); start "
                "it or fix monitor_db in visionline.yaml."
            ) from exc

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @classmethod
    def for_project(
        cls, project: Any, url: str | None = None, must_exist: bool = True
    ) -> MonitorDB:
        """The project's prediction log (or `url`)."""
        return cls(url or project.monitor_db_url, must_exist=must_exist)

    def close(self) -> None:
        self.engine.dispose()

    # --- predictions --------------------------------------------------------------------------
    def insert_predictions(
        self, rows: Sequence[dict[str, Any]], skip_existing: bool = False
    ) -> int:
        """Insert rows in one transaction; returns how many were committed (acknowledged).

        `skip_existing` makes a retry idempotent when an earlier commit landed but its
        acknowledgement was lost with the connection.
        """
        rows = list(rows)
        with self.engine.begin() as conn:
            if skip_existing and rows:
                ids = [r["id"] for r in rows]
                present = set(
                    conn.execute(
                        select(predictions.c.id).where(predictions.c.id.in_(ids))
                    ).scalars()
                )
                rows = [r for r in rows if r["id"] not in present]
            if rows:
                conn.execute(insert(predictions), rows)
        return len(rows)

    def count_predictions(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(predictions)).scalar_one())

    def resolve_prediction(self, prefix: str) -> str:
        """The full id of a prediction from its id or a unique prefix."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise NotFoundError(
                "The prediction id is empty; pass an id from 'visionline monitor recent'."
            )
        with self.engine.connect() as conn:
            found = (
                conn.execute(
                    select(predictions.c.id).where(predictions.c.id.like(prefix + "%")).limit(2)
                )
                .scalars()
                .all()
            )
        if not found:
            raise NotFoundError(
                f"No prediction {prefix!r} in the log; list ids with 'visionline monitor recent'."
            )
        if len(found) > 1:
            raise AmbiguousIdError(
                f"Prediction id {prefix!r} matches several predictions; give more characters."
            )
        return found[0]

    def frame(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        columns: Iterable[str] | None = None,
        newest_first: bool = False,
    ) -> pd.DataFrame:
        """Predictions as a DataFrame (oldest first unless `newest_first`)."""
        import pandas as pd

        cols = [predictions.c[name] for name in (columns or PREDICTION_COLUMNS)]
        query = select(*cols)
        if model:
            query = query.where(predictions.c.model == model)
        if since is not None:
            query = query.where(predictions.c.ts >= since)
        if until is not None:
            query = query.where(predictions.c.ts < until)
        order = predictions.c.ts.desc() if newest_first else predictions.c.ts.asc()
        query = query.order_by(order, predictions.c.id)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    # --- feedback -----------------------------------------------------------------------------
    def add_feedback(
        self,
        prediction_id: str,
        label: str,
        subtype: str | None,
        source: str,
        ts: float | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(feedback).values(
                    prediction_id=prediction_id,
                    ts=time.time() if ts is None else ts,
                    label=label,
                    subtype=subtype,
                    source=source,
                )
            )

    def prediction_ids_for_images(self, shas: Iterable[str]) -> dict[str, list[str]]:
        """Prediction ids per stored image sha256 (feedback from Label Studio maps by content)."""
        wanted = sorted(set(shas))
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    select(predictions.c.image_sha256, predictions.c.id).where(
                        predictions.c.image_sha256.in_(chunk)
                    )
                )
                for sha, pid in rows:
                    out.setdefault(sha, []).append(pid)
        return out

    def feedback_frame(self) -> pd.DataFrame:
        """The latest verdict per prediction joined with the prediction it judges."""
        import pandas as pd

        query = (
            select(
                feedback.c.prediction_id,
                feedback.c.ts.label("feedback_ts"),
                feedback.c.label,
                feedback.c.subtype,
                feedback.c.source,
                predictions.c.ts,
                predictions.c.model,
                predictions.c.version,
                predictions.c.flagged,
                predictions.c.defect_score,
                predictions.c.predicted_class,
                predictions.c.image_sha256,
            )
            .join(predictions, predictions.c.id == feedback.c.prediction_id)
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as conn:
            result = conn.execute(query)
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        return frame.drop_duplicates("prediction_id", keep="last").reset_index(drop=True)

    # --- drift --------------------------------------------------------------------------------
    def add_windows(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(drift_windows), list(rows))

    def add_alarm(self, row: dict[str, Any]) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(insert(alarms).values(**row)).inserted_primary_key[0])

    def windows_frame(self, model: str | None = None) -> pd.DataFrame:
        return self._table_frame(drift_windows, model)

    def alarms_frame(self, model: str | None = None) -> pd.DataFrame:
        return self._table_frame(alarms, model)

    def _table_frame(self, table: Table, model: str | None) -> pd.DataFrame:
        import pandas as pd

        query = select(table).order_by(table.c.id)
        if model:
            query = query.where(table.c.model == model)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
