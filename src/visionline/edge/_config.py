"""`edge.yaml`: the line agent's settings as one validated file, option for option the CLI's.

Every key is the long option of `visionline edge run` with `_` for `-` (`deadline_ms:` is
`--deadline-ms`); an option given on the command line wins over the file. Sources and PLC URLs are
checked here, before anything opens, so a typo in a scheme is one sentence at start, not a crash
at the first item (a channel URL is checked when it is opened: any fsspec protocol may serve).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visionline.edge._decide import FailSafe
from visionline.errors import ConfigError, NotFoundError

__all__ = ["DEFAULT_OUTBOX", "EdgeConfig", "load_edge_config"]

DEFAULT_OUTBOX = Path(".visionline/edge/outbox.db")
SOURCE_SCHEMES = ("", "synth", "folder", "file", "rtsp", "rtsps", "genicam")
PLC_SCHEMES = ("opcua", "modbus", "mqtt", "mqtts")


class EdgeConfig(BaseModel):
    """The settings of one line agent (see `visionline edge run --help` for each)."""

    model_config = ConfigDict(extra="forbid")

    bundle: Path | None = None
    source: str
    plc: str | None = None
    item_tag: str | None = None
    trust_store: Path | None = None
    pubkey: Path | None = None
    deadline_ms: float = Field(100.0, gt=0)
    fail_safe: FailSafe = FailSafe.reject
    outbox: Path = DEFAULT_OUTBOX
    central: str | None = None
    line: str | None = None
    sync_batch: int = Field(200, ge=1, le=5000)
    sync_interval: float = Field(0.5, ge=0.01)
    max_backoff: float = Field(30.0, ge=0.1)
    drain: float = Field(5.0, ge=0.0)
    image_quota_mb: float = Field(500.0, ge=0.0)
    sample_every: int = Field(100, ge=0)
    upload_images: bool = False
    metrics_port: int | None = Field(None, ge=1, le=65535)
    channel: str | None = None
    shadow_items: int = Field(50, ge=1)
    min_agreement: float = Field(0.95, ge=0.0, le=1.0)
    camera_timeout: float | None = Field(None, ge=0.1)
    views: int = Field(1, ge=1, le=64)
    view_separator: str = Field("_", min_length=1)
    max_items: int | None = Field(None, ge=1)
    threads: int = Field(1, ge=1)  # see --threads: one intra-op thread keeps the deadline

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.lower()
        if len(scheme) > 1 and scheme not in SOURCE_SCHEMES:  # one letter: a Windows drive
            raise ValueError(
                f"Unknown frame source {scheme}://; use a folder path, folder:///PATH, a video "
                "file, rtsp://HOST/PATH, genicam:///PATH/producer.cti or synth://?rate=20"
            )
        return value

    @field_validator("plc")
    @classmethod
    def _plc(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme.lower() not in PLC_SCHEMES:
            raise ValueError(
                f"unknown PLC scheme in {value!r}; use one of "
                + ", ".join(s + "://" for s in PLC_SCHEMES)
            )
        return value

    @field_validator("item_tag")
    @classmethod
    def _item_tag(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme.lower() != "opcua":
            raise ValueError(
                f"{value!r} is not an OPC UA node URL; use opcua://HOST:PORT?node=ns=2;s=Line1.Trigger"
            )
        return value

    @field_validator("central")
    @classmethod
    def _central(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"{value!r} is not an HTTP URL; pass the monitor's base URL, e.g. "
                "http://plant-server:8050"
            )
        return value

    @model_validator(mode="after")
    def _complete(self) -> EdgeConfig:
        if self.trust_store is None and self.pubkey is None:
            raise ValueError(
                "the line agent runs only signed bundles; set trust_store (--trust-store DIR of "
                ".pub keys) or pubkey (--pubkey KEY.pub)"
            )
        if self.bundle is None:
            raise ValueError("set bundle (or pass --bundle): the signed bundle the line starts "
                             "with; a channel only brings newer ones")
        return self


def validate_edge_config(values: dict[str, Any], where: str = "edge settings") -> EdgeConfig:
    """`values` as an `EdgeConfig`, or one `ConfigError` sentence naming the key to fix."""
    try:
        return EdgeConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if not key:
            raise ConfigError(f"{where}: {message}.") from exc
        if first["type"] == "extra_forbidden":
            message = "no such setting (the keys are the long options of 'visionline edge run')"
        elif first["type"] == "missing":
            message = "it is required"
        option = "--" + key.replace("_", "-")
        raise ConfigError(f"{where}: {key} ({option}) is invalid: {message}; fix that value.") \
            from exc


def load_edge_config(path: Path, overrides: dict[str, Any] | None = None) -> EdgeConfig:
    """The file at `path` with `overrides` (options given on the command line) on top."""
    if not path.is_file():
        raise NotFoundError(f"No agent config at {path}; pass the path of your edge.yaml.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "a syntax error"
        raise ConfigError(f"{path} is not valid YAML ({problem}{where}); fix the file.") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must be a mapping of settings (key: value); fix the file.")
    return validate_edge_config({**values, **(overrides or {})}, where=str(path))
