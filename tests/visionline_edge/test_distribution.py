"""The edge runtime stands alone: its wheel declares only numpy, Pillow, onnxruntime and
cryptography, and its code imports nothing else (above all, nothing from `visionline`)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import visionline_edge

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "visionline_edge"
ALLOWED = {"numpy", "PIL", "onnxruntime", "cryptography", "visionline_edge"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_edge_code_imports_only_the_standard_library_and_its_four_dependencies():
    for path in sorted(PACKAGE.glob("*.py")):
        outside = _imported_roots(path) - ALLOWED - set(sys.stdlib_module_names)
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_edge_wheel_declares_exactly_its_dependencies_and_its_command():
    edge = tomllib.loads((ROOT / "edge" / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!~\[ ]", d)[0].lower() for d in edge["project"]["dependencies"]}
    assert names == {"numpy", "pillow", "onnxruntime", "cryptography"}
    assert edge["project"]["scripts"]["visionline-edge"] == "visionline_edge.cli:main"
    include = edge["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert (ROOT / "edge" / next(iter(include))).resolve() == PACKAGE


def test_the_visionline_wheel_ships_the_same_runtime_and_version():
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "src/visionline_edge" in main["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert main["project"]["scripts"]["visionline-edge"] == "visionline_edge.cli:main"
    assert main["project"]["version"] == visionline_edge.__version__
