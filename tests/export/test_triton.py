"""Triton repository layout; the config parses into Triton's own ModelConfig protobuf."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2

from visionline.errors import ConfigError
from visionline.export import parse_triton_config, write_triton_repo
from visionline.export._triton import triton_config


def test_triton_repo_layout_and_config(tmp_path) -> None:
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx")
    model_dir = write_triton_repo(
        tmp_path / "repo", "apples", onnx_file, ["good", "bruise", "rot"], 64, 1024, version=2
    )
    assert (model_dir / "2" / "model.onnx").read_bytes() == b"onnx"
    assert (model_dir / "labels.txt").read_text().split() == ["good", "bruise", "rot"]
    config = parse_triton_config((model_dir / "config.pbtxt").read_text())
    assert config.backend == "onnxruntime" and config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.input[0].dims) == [3, 64, 64]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert {o.name: list(o.dims) for o in config.output} == {
        "probabilities": [3],
        "embedding": [1024],
    }


def test_broken_config_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not parse"):
        parse_triton_config(
            triton_config("m", 64, 3, 8).replace("max_batch_size", "max_batch_sise")
        )


def test_version_zero_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="start at 1"):
        write_triton_repo(tmp_path, "m", tmp_path / "x.onnx", ["good", "bad"], 64, 8, version=0)
