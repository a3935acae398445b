"""Checks that hold deployment files to what really exists: the CLI, the metrics, the schemas.

No Docker engine or cluster runs on the development machines, so the deployment files are parsed
and compared with the code: every command line must parse as the real Typer/click command, every
metric a dashboard or alert rule names must be one the server or the monitoring dashboard exports,
and every file must validate against the schema its tool publishes (vendored by check-jsonschema
and kubernetes-validate, so no network is needed).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_documents(path: Path) -> list[dict]:
    """Every non-empty YAML document in `path`."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (only true/false), as GitHub reads workflows: `on:` stays a string."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml12(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Yaml12Loader)


def vendored_schema(name: str) -> dict:
    """A JSON schema that check-jsonschema ships (e.g. `compose-spec`, `github-workflows`)."""
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / f"{name}.json").read_text())


def schema_errors(instance: Any, schema: dict) -> list[str]:
    """Validation errors as `path: message` lines, using the draft the schema declares."""
    from jsonschema.validators import validator_for

    validator = validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message[:300]}"
        for error in validator.iter_errors(instance)
    ]


# --- Dockerfiles ---------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    steps, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        continued = line.endswith("\\")
        current = f"{current} {line[:-1] if continued else line}"
        if not continued:
            keyword, _, rest = current.strip().partition(" ")
            steps.append((keyword.upper(), rest.strip()))
            current = ""
    return steps


def dockerfile_entrypoint(path: Path) -> list[str]:
    """The exec-form ENTRYPOINT of the final stage."""
    entries = [args for keyword, args in dockerfile_instructions(path) if keyword == "ENTRYPOINT"]
    assert entries, f"{path} has no ENTRYPOINT"
    return json.loads(entries[-1])


# --- command lines -------------------------------------------------------------------------------


def _click_exceptions(command: Any) -> Any:
    """The exceptions module of the click that built `command` (Typer ships its own copy)."""
    import importlib

    for cls in type(command).__mro__:
        if cls.__name__ == "Command" and cls.__module__.endswith(".core"):
            return importlib.import_module(cls.__module__.removesuffix(".core") + ".exceptions")
    raise TypeError(f"{command!r} is not a click command")


def parse_click(root: Any, prog: str, args: Sequence[str]) -> tuple[list[str], dict]:
    """Resolve `prog ARGS` through click group `root` and parse the leaf command's options.

    Returns the subcommand path and the parsed parameters. An unknown subcommand or option, a
    missing argument or a value of the wrong type fails the test.
    """
    rest = list(args)
    command, path = root, []
    while getattr(command, "commands", None) is not None:
        if not rest:
            raise AssertionError(f"`{prog} {' '.join(path)}` needs a subcommand")
        name = rest.pop(0)
        found = command.commands.get(name)
        if found is None:
            raise AssertionError(f"`{prog} {' '.join([*path, name])}` is not a command")
        command, path = found, [*path, name]
    errors = _click_exceptions(command)
    try:
        context = command.make_context(" ".join([prog, *path]), list(rest))
    except errors.ClickException as exc:
        raise AssertionError(
            f"`{prog} {shlex.join([*path, *rest])}`: {exc.format_message()}"
        ) from exc
    return path, context.params


def parse_visionline(args: Sequence[str]) -> tuple[list[str], dict]:
    """`parse_click` for `visionline ARGS` (a leading `visionline` is dropped), plus `--help`."""
    import typer.main
    from typer.testing import CliRunner

    from visionline.cli import app

    args = list(args)[1:] if args and args[0] == "visionline" else list(args)
    path, params = parse_click(typer.main.get_command(app), "visionline", args)
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"`visionline {' '.join(path)} --help` failed: {result.output}"
    return path, params


def shell_commands(script: str, program: str) -> list[list[str]]:
    """Each line of a shell script that calls `program`, split into words; `"$VAR"` words are
    left out since the shell fills them in at run time."""
    found = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == program:
            found.append([w for w in words if not w.startswith("$")])
    return found


# --- docker compose variables --------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?+])([^}]*))?\}|\$(\w+)")


def compose_variables(text: str) -> set[str]:
    """Names compose interpolates in `text` (`$$` is an escaped dollar for the container)."""
    return {m.group(1) or m.group(4) for m in _VARIABLE.finditer(text) if m.group(0) != "$$"}


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: '{line}' is not KEY=VALUE"
            values[key.strip()] = value.strip()
    return values


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation over a loaded compose tree, with `env` as the `.env`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1) or match.group(4), match.group(2), match.group(3)
        current = env.get(name)
        unset_or_empty = current is None or (
            current == "" and operator and operator.startswith(":")
        )
        if operator in ("-", ":-"):
            return argument if unset_or_empty else current
        if operator in ("?", ":?"):
            if unset_or_empty:
                raise AssertionError(f"{name} is required: {argument}")
            return current
        if operator in ("+", ":+"):
            return "" if unset_or_empty else argument
        return current or ""

    return _VARIABLE.sub(substitute, value)


# --- metrics -------------------------------------------------------------------------------------

_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


@cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Every sample name the server's and the dashboard's /metrics can expose, with its labels.

    Read from the metric objects themselves (prometheus-client keeps the name, type and label
    names on them), so a renamed metric or label breaks the dashboards' tests at once.
    """
    from prometheus_client.metrics import MetricWrapperBase

    from visionline.monitor import MonitorMetrics
    from visionline.serve._metrics import ServerMetrics

    samples: dict[str, frozenset[str]] = {}
    for holder in (ServerMetrics(), MonitorMetrics()):
        for metric in vars(holder).values():
            if isinstance(metric, MetricWrapperBase):
                labels = frozenset(metric._labelnames)
                for suffix in _SAMPLE_SUFFIXES[metric._type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    samples[metric._name + suffix] = labels | extra
    return samples


def promql_problems(expr: str) -> list[str]:
    """What in a PromQL expression names a metric or label that visionline does not export."""
    exported = exported_metrics()
    used = set(re.findall(r"\bvisionline_\w+", expr))
    if not used:
        return [f"{expr!r} uses no visionline metric"]
    problems = [f"{name} is not exported by visionline" for name in sorted(used - exported.keys())]
    known = set().union(*(exported.get(name, frozenset()) for name in used)) | {"job", "instance"}
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^{}]*)\}", expr):
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    labels.update(re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)", expr))
    problems += [f"label {name!r} is not on {sorted(used)}" for name in sorted(labels - known)]
    return problems


# --- the server image's Python environment -------------------------------------------------------


def requirements_closure(requirements: Path) -> set[str]:
    """Canonical names of the distributions `pip install -r requirements` brings, from the
    metadata installed here (so it needs no network)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    todo = [Requirement(line) for line in lines if line]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            if child.marker is None or any(
                child.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            ):
                todo.append(child)
    return names


_IMPORT_WITHIN = """
import importlib, importlib.abc, importlib.metadata, sys
from packaging.utils import canonicalize_name
allowed = set(sys.argv[1].split(","))
owners = importlib.metadata.packages_distributions()
class OnlyAllowed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {canonicalize_name(d) for d in owners.get(top, [])}
        if top in sys.stdlib_module_names or top == "visionline" or not dists or dists & allowed:
            return None
        raise ModuleNotFoundError(f"{top} comes from {sorted(dists)}, which is not installed", name=name)
sys.meta_path.insert(0, OnlyAllowed())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def import_within(distributions: set[str], modules: Sequence[str]) -> subprocess.CompletedProcess:
    """Import `modules` in a fresh interpreter that can see only `distributions` (plus the
    standard library and visionline itself): what an image holding only those would do."""
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHIN, ",".join(sorted(distributions)), *modules],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
