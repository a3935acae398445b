"""TrainConfig: YAML plus overrides, validated with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionline.errors import ConfigError, TrainingError
from visionline.train import Backbone, Schedule, TrainConfig, load_train_config


def test_overrides_win_over_the_file_and_none_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("backbone: resnet18\nepochs: 7\nschedule: onecycle\nlr: 0.01\n")
    config = load_train_config(path, epochs=3, lr=None)
    assert config.backbone is Backbone.RESNET18
    assert (config.epochs, config.lr, config.schedule) == (3, 0.01, Schedule.ONE_CYCLE)
    assert config.flat()["schedule"] == "onecycle"
    again = load_train_config(None, **TrainConfig.model_validate(config.model_dump()).model_dump())
    assert again == config


def test_backbone_learning_rate_is_discriminative_only_for_pretrained_starts() -> None:
    assert TrainConfig(lr=0.01).backbone_lr == pytest.approx(0.001)
    assert TrainConfig(lr=0.01, pretrained="model.pt").backbone_lr == pytest.approx(0.001)
    assert TrainConfig(lr=0.01, pretrained="none").backbone_lr == 0.01
    assert TrainConfig(lr=0.01, pretrained="none", backbone_lr_mult=0.5).backbone_lr == 0.005


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = TrainConfig(backbone="convnext_atto", image_size=64, balance="sampler")
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    assert load_train_config(path) == config


@pytest.mark.parametrize(
    ("text", "error", "needle"),
    [
        ("epoch: 3\n", ConfigError, "unknown key 'epoch'"),
        ("epochs: -1\n", ConfigError, "'epochs' is invalid"),
        ("backbone: mobilenet_v3\n", TrainingError, "did you mean"),
        ("pretrained: imagenet21k\n", ConfigError, "'imagenet', 'none' or the path"),
        ("epochs: [1\n", ConfigError, "not valid YAML"),
        ("- 1\n- 2\n", ConfigError, "must be a YAML mapping"),
    ],
)
def test_bad_config_files_give_one_line_errors(
    tmp_path: Path, text: str, error: type[Exception], needle: str
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(error, match=needle) as info:
        load_train_config(path)
    assert "\n" not in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")
