"""Reading and writing `visionline.yaml`, with one-line errors that name the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from visionline.config._model import ProjectConfig
from visionline.errors import ConfigError, ProjectNotFoundError

CONFIG_FILE = "visionline.yaml"


def describe_validation_error(error: ValidationError, source: str) -> str:
    """The first problem of a pydantic error as one sentence: where, what, and how to fix it."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{location}'; remove it or check its spelling."
    if first["type"] == "missing":
        return f"{source}: key '{location}' is required; add it."
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(error.errors()) - 1} more problems)" if len(error.errors()) > 1 else ""
    return f"{source}: '{location}' is invalid: {message}; fix that value{more}."


def parse_config(text: str, source: str = CONFIG_FILE) -> ProjectConfig:
    """Validate YAML text into a `ProjectConfig`."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source} is not valid YAML{where}; fix the syntax there.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping of keys to values.")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from exc


def dump_config(config: ProjectConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)


@dataclass(frozen=True)
class Project:
    """A project directory and its validated config; resolves storage paths."""

    root: Path
    config: ProjectConfig

    @classmethod
    def load(cls, start: Path | str | None = None) -> Project:
        """Find `visionline.yaml` in `start` or a parent directory and load it."""
        here = Path(start or Path.cwd()).resolve()
        for directory in (here, *here.parents):
            path = directory / CONFIG_FILE
            if path.is_file():
                return cls(directory, parse_config(path.read_text(), str(path)))
        raise ProjectNotFoundError(
            f"No {CONFIG_FILE} in {here} or its parents; run 'visionline init' there first."
        )

    def path(self, value: str) -> Path:
        """A storage path from the config, resolved against the project root."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def uri(self, value: str) -> str:
        """A storage URI: remote URIs unchanged, local paths made absolute."""
        if "://" in value and not value.startswith("file://"):
            return value
        return str(self.path(value.removeprefix("file://")))

    @property
    def blob_store_uri(self) -> str:
        return self.uri(self.config.storage.blob_store)

    @property
    def datasets_dir(self) -> Path:
        return self.path(self.config.storage.datasets)

    @property
    def cache_dir(self) -> Path:
        return self.path(self.config.storage.cache)

    @property
    def reports_dir(self) -> Path:
        return self.path(self.config.storage.reports)

    @property
    def tracking_uri(self) -> str:
        return _sqlite_relative_to(self.config.storage.tracking_uri, self.root)

    @property
    def monitor_db_url(self) -> str:
        return _sqlite_relative_to(self.config.storage.monitor_db, self.root)


def _sqlite_relative_to(url: str, root: Path) -> str:
    """Make a relative `sqlite:///path` absolute so it works from any working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        path = root / url.removeprefix(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def init_project(directory: Path, name: str | None = None, force: bool = False) -> Path:
    """Write a default `visionline.yaml` into `directory`; refuses to overwrite unless forced."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is a file, not a folder; pass a folder path to init.")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it.")
    config = ProjectConfig(name=name or ProjectConfig().name)
    path.write_text(dump_config(config))
    return path
