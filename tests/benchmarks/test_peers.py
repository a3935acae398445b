from pathlib import Path

import _peers
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_serves_images_and_tensors_from_one_onnx_file_with_batching(tmp_path) -> None:
    onnx = tmp_path / "model.onnx"
    repo = _peers.triton_repository(tmp_path, onnx, size=96, threads=1, max_batch=16, delay_us=2000,
                                    instances=2, classes=3)

    images, tensors = _parse(repo / "apples" / "config.pbtxt"), _parse(repo / "apples_tensor" / "config.pbtxt")
    assert images.backend == tensors.backend == "python"
    assert images.input[0].data_type == model_config_pb2.TYPE_STRING
    assert list(images.input[0].dims) == [1]
    assert tensors.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(tensors.input[0].dims) == [3, 96, 96]
    for config in (images, tensors):
        assert config.max_batch_size == 16
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert config.instance_group[0].count == 2
        assert list(config.output[0].dims) == [3]
        assert config.parameters["onnx_path"].string_value == str(onnx)
        assert config.parameters["ort_threads"].string_value == "1"
    model = (repo / "apples" / "1" / "model.py").read_text()
    assert "class TritonPythonModel" in model
