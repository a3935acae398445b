"""Synth settings: validated at the boundary, errors as one sentence naming the field."""

from __future__ import annotations

import pytest

from visionline.errors import ConfigError
from visionline.synth import (
    CameraConfig,
    Drift,
    DriftConfig,
    SynthConfig,
    Variety,
    build_config,
    kelvin_rgb,
)


def test_defaults_match_the_project_classes():
    from visionline.config import ProjectConfig

    config = SynthConfig()
    subtypes = ProjectConfig().defect_labels()["defect"]
    assert [s.value for s in config.subtypes] == subtypes
    assert config.new_variety not in config.varieties
    assert config.size == 128


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"size": 5000}, "size"),
        ({"size": 8}, "size"),
        ({"defect_rate": 1.5}, "defect_rate"),
        ({"varieties": []}, "list at least one variety"),
        ({"varieties": ["purple"]}, "varieties"),
        ({"severity_min": 0.8, "severity_max": 0.2}, "severity_min"),
        ({"camera": {"jpeg_quality": 0}}, "camera.jpeg_quality"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_values_become_one_config_error(values, field):
    with pytest.raises(ConfigError) as info:
        build_config(SynthConfig, **values)
    message = str(info.value)
    assert field in message and "\n" not in message and message.endswith(".")


def test_config_round_trips_through_json():
    config = SynthConfig(
        seed=3,
        varieties=(Variety.RED,),
        camera=CameraConfig(noise=0.02),
        drift=DriftConfig(kind=Drift.LIGHTING, start=5),
    )
    assert SynthConfig.model_validate_json(config.model_dump_json()) == config


def test_kelvin_colours_run_from_warm_to_cool():
    warm, daylight, cool = kelvin_rgb(2500), kelvin_rgb(6600), kelvin_rgb(10000)
    assert warm[0] / warm[2] > daylight[0] / daylight[2] > cool[0] / cool[2]
