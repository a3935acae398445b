"""What a cached step result depends on besides its settings and inputs: visionline's code (with
the edge runtime `visionline_edge`, which decodes images and runs bundles) and the versions of the
libraries that shape its numbers.

The whole package is hashed rather than the modules a step imports: the stages import each other
lazily and by computed name (`import_module`), and importing any pipeline step runs
`visionline.pipeline`'s `__init__`, which reaches nearly every module anyway. A release's code
never changes, so its caches stay valid; during development every edit re-runs the steps, which
is the safe side to err on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("visionline", "visionline_edge")


def _package_root(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


SOURCE_ROOTS = tuple(root for root in map(_package_root, PACKAGES) if root is not None)
"""The source trees that are hashed (tests point one at a modified copy)."""

LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxconverter-common",
    "torch-pruning",
    "numpy",
    "pillow",
    "scipy",
    "scikit-learn",
    "optuna",
    "mlflow",
)
"""Distributions whose version changes trained weights, exported graphs or computed metrics."""


@cache
def library_versions() -> dict[str, str]:
    """Installed version of each of `LIBRARIES` ('absent' when not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _source_files(root: Path) -> list[Path]:
    """Every file of the package (modules and data such as report templates), no bytecode."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


@cache
def _digest(roots: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for number, root in enumerate(roots):
        for path in _source_files(root):
            digest.update(f"{number}:{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(library_versions(), sort_keys=True).encode())
    return digest.hexdigest()


def code_digest() -> str:
    """sha256 of the files of `SOURCE_ROOTS` and of `library_versions()`, computed once per
    process (the code of a running process does not change)."""
    return _digest(SOURCE_ROOTS)
