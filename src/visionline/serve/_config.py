"""Server settings: one pydantic model validated at the boundary (CLI flags map onto it 1:1)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from visionline.errors import ConfigError
from visionline.serve._security import check_exposure, check_key, check_tls


class Route(BaseModel):
    """A challenger version that gets a share of one model's traffic (canary) or a mirror (shadow)."""

    model_config = ConfigDict(frozen=True)

    model: str
    version: str
    percent: float = Field(default=100.0, ge=0.0, le=100.0)

    @classmethod
    def parse(cls, text: str, *, with_percent: bool) -> Route:
        """Parse `MODEL:VERSION[:PERCENT]` as given on the command line."""
        parts = text.split(":")
        expected = "MODEL:VERSION:PERCENT" if with_percent else "MODEL:VERSION[:PERCENT]"
        if len(parts) not in ((3,) if with_percent else (2, 3)) or not all(parts):
            raise ConfigError(f"Route {text!r} is not {expected}; write it like apples:2:10.")
        try:
            percent = float(parts[2]) if len(parts) == 3 else 100.0
        except ValueError as exc:
            raise ConfigError(f"Percent in {text!r} is not a number; write it like apples:2:10.") from exc
        if not 0.0 <= percent <= 100.0:
            raise ConfigError(f"Percent in {text!r} must be between 0 and 100.")
        return cls(model=parts[0], version=parts[1], percent=percent)


class ServerConfig(BaseModel):
    """Everything `visionline serve` can be told. Defaults suit a 2-4 core edge box."""

    model_config = ConfigDict(extra="forbid")

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int | None = Field(default=8001, ge=0, le=65535)
    max_batch_size: int = Field(default=8, ge=1, le=1024)
    max_queue_delay_us: int = Field(default=2000, ge=0, le=10_000_000)
    max_queue_size: int = Field(default=256, ge=1, description="Queued rows before 503.")
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime; 0 = its default.")
    inter_op_threads: int = Field(default=0, ge=0)
    preprocess_threads: int = Field(default=2, ge=1, description="Requests decoded at once, REST and gRPC together.")
    grpc_threads: int = Field(default=16, ge=1, description="gRPC requests handled at once (each decodes its own).")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=40_000_000, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    pubkey: Path | None = None
    trust_store: Path | None = Field(default=None, description="Folder (or PEM file) of trusted public keys.")
    require_signature: bool = Field(default=False, description="Load only bundles signed by a trusted key.")
    inference_key: SecretStr | None = Field(default=None, description="Needed for inference and metadata.")
    management_key: SecretStr | None = Field(default=None, description="Needed for the repository API.")
    public_inference: bool = Field(default=False, description="Serve inference without a key off loopback.")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    version_policy: str = "latest:1"
    canary: list[Route] = Field(default_factory=list)
    shadow: list[Route] = Field(default_factory=list)
    load_on_start: bool = True
    poll_s: float | None = Field(default=None, gt=0)
    canary_seed: int | None = None
    prediction_log_queue: int = Field(default=10_000, ge=1)

    @field_validator("version_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        parse_version_policy(value)
        return value

    @model_validator(mode="after")
    def _check_security(self) -> ServerConfig:
        """Refuse to build a server that is open to the network by accident (see `_security`)."""
        keys = {"inference": self.inference_key, "management": self.management_key}
        for what, key in keys.items():
            if key is not None:
                check_key(key.get_secret_value(), what)
        if self.inference_key is not None and self.management_key is not None and (
            self.inference_key.get_secret_value() == self.management_key.get_secret_value()
        ):
            raise ConfigError("The management key must differ from the inference key; make a second key.")
        if self.public_inference and self.inference_key is not None:
            raise ConfigError("--public-inference and an inference key contradict each other; drop one.")
        check_exposure(
            self.host,
            inference_key=self.inference_key is not None,
            management_key=self.management_key is not None,
            public_inference=self.public_inference,
        )
        check_tls(self.tls_cert, self.tls_key)
        return self


def parse_version_policy(text: str) -> tuple[str, int | list[int]]:
    """`latest:N`, `all` or `specific:1,3` (Triton's and TF Serving's three policies)."""
    kind, _, arg = text.partition(":")
    try:
        if kind == "latest":
            count = int(arg or 1)
            if count < 1:
                raise ValueError
            return "latest", count
        if kind == "specific":
            versions = [int(v) for v in arg.split(",") if v.strip()]
            if not versions:
                raise ValueError
            return "specific", versions
        if kind == "all" and not arg:
            return "all", 0
    except ValueError:
        pass
    raise ConfigError(
        f"Version policy {text!r} is not understood; use latest:N, all or specific:1,3."
    )
