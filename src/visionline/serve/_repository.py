"""The model repository `REPO/<model>/<version>/`: version policy, load/unload, atomic hot swap.

A load builds every new version completely (verify → load → warm up → self-test) before one
locked swap puts it in service; a failure keeps whatever was serving and records why. Retired
versions drain their queues after the swap, so no request sees a half-loaded model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from visionline.errors import NotFoundError, ServiceUnavailableError, VisionlineError
from visionline.serve._batcher import Batcher
from visionline.serve._config import ServerConfig, parse_version_policy
from visionline.serve._metrics import ServerMetrics
from visionline.serve._runner import ModelRunner, load_runner

log = logging.getLogger("visionline.serve")


@dataclass
class Served:
    """A version in service: its runner, its batcher, and the manifest fingerprint it came from."""

    model: str
    version: str
    runner: ModelRunner
    batcher: Batcher
    fingerprint: str


@dataclass
class ModelState:
    """What the repository index reports for one model."""

    versions: dict[str, Served] = field(default_factory=dict)
    state: str = "UNAVAILABLE"
    reason: str = ""
    failed_snapshot: tuple[tuple[str, str], ...] | None = None


def _fingerprint(path: Path) -> str:
    manifest = path / "bundle.json"
    try:
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    except OSError:
        return ""


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


class ModelRepository:
    """Thread-safe map of model → served versions, loaded from a directory of bundles."""

    def __init__(
        self,
        config: ServerConfig,
        metrics: ServerMetrics,
        pinned: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.root = Path(config.repository)
        if not self.root.is_dir():
            raise NotFoundError(
                f"Model repository {self.root} does not exist; pass a REPO/<model>/<version>/ folder."
            )
        self.config = config
        self.metrics = metrics
        self.policy = parse_version_policy(config.version_policy)
        self.pinned = set(pinned)
        self._models: dict[str, ModelState] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self.initial_load_done = False

    # --- discovery ---------------------------------------------------------------------------
    def model_names_on_disk(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions_on_disk(self, model: str) -> list[str]:
        folder = self.root / model
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if p.is_dir() and (p / "bundle.json").is_file()]
        return sorted(found, key=_version_key)

    def wanted_versions(self, model: str) -> list[str]:
        """The versions the policy (plus canary/shadow pins) asks to serve."""
        available = self.versions_on_disk(model)
        pins = {v for m, v in self.pinned if m == model}
        kind, arg = self.policy
        if kind == "latest":  # a pinned challenger does not push the champion out
            chosen = [v for v in available if v not in pins][-int(arg) :]  # type: ignore[arg-type]
        elif kind == "specific":
            chosen = [v for v in available if v in {str(x) for x in arg}]  # type: ignore[union-attr]
        else:
            chosen = list(available)
        chosen += [v for v in pins if v in available and v not in chosen]
        return sorted(chosen, key=_version_key)

    # --- load / unload ------------------------------------------------------------------------
    def _build(self, model: str, version: str) -> Served:
        path = self.root / model / version
        fingerprint = _fingerprint(path)
        runner = load_runner(
            path,
            pubkey=self.config.pubkey,
            trust_store=self.config.trust_store,
            require_signature=self.config.require_signature,
            threads=self.config.intra_op_threads,
            max_pixels=self.config.max_pixels,
            warm_up_batch_sizes=sorted({1, self.config.max_batch_size}),
        )
        runner.version = version
        batcher = Batcher(
            runner,
            self.metrics,
            max_batch_size=self.config.max_batch_size,
            max_queue_delay_us=self.config.max_queue_delay_us,
            max_queue_size=self.config.max_queue_size,
        )
        return Served(model, version, runner, batcher, fingerprint)

    def load(self, model: str) -> ModelState:
        """(Re)load one model per policy; new versions go live only if every one of them loads."""
        if not (self.root / model).is_dir():
            raise NotFoundError(f"Model {model!r} is not in repository {self.root}; add REPO/{model}/<version>/.")
        with self._load_lock:
            wanted = self.wanted_versions(model)
            if not wanted:
                raise NotFoundError(f"Model {model!r} has no version with a bundle.json; add one under {self.root / model}.")
            with self._lock:
                state = self._models.setdefault(model, ModelState())
                current = dict(state.versions)
            fresh: dict[str, Served] = {}
            try:
                for version in wanted:
                    old = current.get(version)
                    if old is not None and old.fingerprint == _fingerprint(self.root / model / version):
                        fresh[version] = old
                        continue
                    fresh[version] = self._build(model, version)
                    self.metrics.model_loads.labels(model, version, "success").inc()
            except VisionlineError as exc:
                for served in fresh.values():
                    if served not in current.values():
                        served.batcher.stop()
                self.metrics.model_loads.labels(model, version, "failure").inc()
                with self._lock:
                    state.reason = f"version {version}: {exc}"
                    state.failed_snapshot = self._snapshot(model)
                    if not state.versions:
                        state.state = "UNAVAILABLE"
                log.error("load of %s v%s failed, previous versions keep serving: %s", model, version, exc)
                raise
            with self._lock:
                state.versions, state.state, state.reason = fresh, "READY", ""
                state.failed_snapshot = None
            for version, served in current.items():
                if fresh.get(version) is not served:
                    served.batcher.stop()
            log.info("model %s serving versions %s", model, ",".join(fresh))
            return state

    def unload(self, model: str) -> None:
        with self._load_lock, self._lock:
            state = self._models.get(model)
            if state is None or not state.versions:
                raise NotFoundError(f"Model {model!r} is not loaded; see /v2/repository/index.")
            retired = list(state.versions.values())
            state.versions, state.state, state.reason = {}, "UNAVAILABLE", "unloaded"
        for served in retired:
            served.batcher.stop()

    def load_all(self) -> None:
        """Load every model on disk; one broken model does not stop the others."""
        for model in self.model_names_on_disk():
            try:
                self.load(model)
            except VisionlineError:
                continue
        self.initial_load_done = True

    # --- lookup -------------------------------------------------------------------------------
    def get(self, model: str, version: str | None = None, exclude: Iterable[str] = ()) -> Served:
        """The served version (newest by default, skipping `exclude`, e.g. a canary)."""
        with self._lock:
            state = self._models.get(model)
            if state is None:
                raise NotFoundError(f"Model {model!r} is not served; see /v2/repository/index.")
            if version:
                served = state.versions.get(version)
                if served is None:
                    raise NotFoundError(
                        f"Model {model!r} has no version {version!r} in service; "
                        f"serving {', '.join(state.versions) or 'none'}."
                    )
                return served
            candidates = [v for v in state.versions if v not in set(exclude)] or list(state.versions)
            if not candidates:
                raise ServiceUnavailableError(
                    f"Model {model!r} has no version in service ({state.reason or 'loading'}); load it."
                )
            return state.versions[max(candidates, key=_version_key)]

    def is_ready(self, model: str, version: str | None = None) -> bool:
        try:
            return self.get(model, version).runner.ready
        except VisionlineError:
            return False

    def server_ready(self) -> bool:
        """Ready only after the first load finished and at least one model is warm."""
        with self._lock:
            return self.initial_load_done and any(
                s.runner.ready for st in self._models.values() for s in st.versions.values()
            )

    def index(self) -> list[dict[str, str]]:
        rows = []
        with self._lock:
            for model in sorted(set(self.model_names_on_disk()) | set(self._models)):
                state = self._models.get(model)
                served = state.versions if state else {}
                for version in sorted(set(self.versions_on_disk(model)) | set(served), key=_version_key):
                    if version in served:
                        rows.append({"name": model, "version": version, "state": "READY", "reason": ""})
                    else:
                        rows.append({
                            "name": model, "version": version, "state": "UNAVAILABLE",
                            "reason": state.reason if state and state.reason.startswith(f"version {version}:") else "",
                        })
        return rows

    def served_versions(self, model: str) -> list[str]:
        with self._lock:
            state = self._models.get(model)
            return sorted(state.versions, key=_version_key) if state else []

    def reason(self, model: str) -> str:
        with self._lock:
            state = self._models.get(model)
            return state.reason if state else ""

    # --- polling ------------------------------------------------------------------------------
    def _snapshot(self, model: str) -> tuple[tuple[str, str], ...]:
        return tuple((v, _fingerprint(self.root / model / v)) for v in self.wanted_versions(model))

    def _changed(self, model: str) -> bool:
        with self._lock:
            state = self._models.get(model)
            served = {v: s.fingerprint for v, s in (state.versions.items() if state else [])}
            failed = state.failed_snapshot if state else None
        if failed is not None and failed == self._snapshot(model):
            return False
        wanted = self.wanted_versions(model)
        return set(wanted) != set(served) or any(
            served[v] != _fingerprint(self.root / model / v) for v in wanted if v in served
        )

    def poll_once(self) -> None:
        """Load models whose wanted versions or manifests changed on disk; unload removed ones."""
        on_disk = set(self.model_names_on_disk())
        for model in sorted(on_disk):
            if self._changed(model):
                try:
                    self.load(model)
                except VisionlineError:
                    continue
        with self._lock:
            gone = [m for m, s in self._models.items() if m not in on_disk and s.versions]
        for model in gone:
            self.unload(model)

    def start_polling(self, interval_s: float) -> None:
        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.poll_once()
                except Exception:
                    log.exception("repository poll failed; will retry")

        self._poller = threading.Thread(target=run, name="repository-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop polling and drain every batcher."""
        self._stop.set()
        with self._lock:
            served = [s for st in self._models.values() for s in st.versions.values()]
        for item in served:
            item.batcher.stop()
