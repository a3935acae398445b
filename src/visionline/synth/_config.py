"""What the synthetic packing line can vary: choices as `str, Enum`, settings as pydantic models."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visionline.errors import ConfigError

MIN_SIZE = 32
MAX_SIZE = 512


class Variety(str, Enum):
    """Apple varieties, each with its own colour model and skin texture."""

    RED = "red"
    GREEN = "green"
    YELLOW = "yellow"
    BLUSH = "blush"
    STRIPED = "striped"
    RUSSET = "russet"


class Subtype(str, Enum):
    """Defect subtypes; the names match the default project classes."""

    BRUISE = "bruise"
    ROT = "rot"
    SCAB = "scab"
    CUT = "cut"
    INSECT_HOLE = "insect_hole"


class Drift(str, Enum):
    """Production changes that the monitoring stage must detect."""

    DIRTY_LENS = "dirty_lens"
    LIGHTING = "lighting"
    NEW_VARIETY = "new_variety"
    CAMERA_SHIFT = "camera_shift"


TRAINING_VARIETIES = (Variety.RED, Variety.GREEN, Variety.YELLOW, Variety.BLUSH, Variety.STRIPED)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Strict):
    """Camera and illumination of the line; each image jitters around these values."""

    exposure: float = Field(1.0, gt=0.05, le=4.0, description="gain on scene brightness")
    color_temperature: float = Field(5500.0, ge=2000, le=12000, description="light, kelvin")
    white_balance: float = Field(5500.0, ge=2000, le=12000, description="camera WB, kelvin")
    noise: float = Field(0.012, ge=0, le=0.5, description="sensor noise std (0-1 scale)")
    jpeg_quality: int = Field(90, ge=5, le=100)
    motion_blur: float = Field(0.0, ge=0, le=30, description="belt-direction blur, px at 128")
    defocus_blur: float = Field(0.0, ge=0, le=20, description="gaussian radius, px at 128")
    vignetting: float = Field(0.25, ge=0, le=0.9, description="corner darkening")
    light_azimuth: float = Field(225.0, ge=0, lt=360, description="degrees, image coordinates")
    light_elevation: float = Field(55.0, gt=5, le=90, description="degrees above the belt")
    jitter: float = Field(0.04, ge=0, le=0.5, description="relative per-image jitter")


class DriftConfig(_Strict):
    """A drift that switches on at image `start`, reaches full strength `ramp` images later and,
    with `end`, is fixed from that image on (the lens cleaned, the lamp replaced)."""

    kind: Drift
    start: int = Field(0, ge=0)
    ramp: int = Field(200, ge=1)
    max_strength: float = Field(1.0, gt=0, le=1.0)
    end: int | None = Field(None, ge=1, description="first image after the fix; None: never fixed")

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> DriftConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must come after start")
        return self

    def strength(self, index: int) -> float:
        """Drift strength in [0, max_strength] at stream position `index`."""
        if index < self.start or (self.end is not None and index >= self.end):
            return 0.0
        return self.max_strength * min(1.0, (index - self.start + 1) / self.ramp)


class SynthConfig(_Strict):
    """Everything that defines a synthetic stream; with the seed it fixes every byte."""

    size: int = Field(128, ge=MIN_SIZE, le=MAX_SIZE, description="image side, pixels")
    seed: int = Field(0, ge=0)
    varieties: tuple[Variety, ...] = TRAINING_VARIETIES
    new_variety: Variety = Variety.RUSSET
    defect_rate: float = Field(0.3, ge=0, le=1)
    subtypes: tuple[Subtype, ...] = tuple(Subtype)
    severity_min: float = Field(0.0, ge=0, le=1)
    severity_max: float = Field(1.0, ge=0, le=1)
    hard_fraction: float = Field(0.15, ge=0, le=1, description="share of subtle defects made faint")
    stem_probability: float = Field(0.6, ge=0, le=1)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    drift: DriftConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if not self.varieties:
            raise ValueError("list at least one variety")
        if not self.subtypes:
            raise ValueError("list at least one defect subtype")
        if self.severity_min > self.severity_max:
            raise ValueError("severity_min must not exceed severity_max")
        return self


def build_config(model: type[_Strict], source: str = "synth options", **values: object) -> _Strict:
    """Validate keyword values into `model`, turning pydantic errors into one `ConfigError`."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: '{where}' is invalid: {message}; fix that value.") from exc
