"""The gRPC front end against tritonclient.grpc: health, metadata, inference, repository, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from serve_support import CLASSES, SIZE, image_bytes, serving, write_bundle
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def client(tmp_path_factory, onnx_model):
    root = tmp_path_factory.mktemp("grpc") / "repo"
    write_bundle(onnx_model, root / "apples" / "1", "1")
    with (
        serving(root, max_queue_delay_us=0) as server,
        grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c,
    ):
        yield c, server


def test_health_metadata_and_index(client):
    c, _ = client
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("apples")
    assert not c.is_model_ready("apples", "3")
    assert c.get_server_metadata().name == "visionline"
    meta = c.get_model_metadata("apples", as_json=True)
    assert meta["inputs"][0]["shape"] == ["-1", "3", str(SIZE), str(SIZE)]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "embedding"]
    index = c.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": "apples", "version": "1", "state": "READY"}]


def test_image_bytes_and_fp32_agree_with_in_process(client):
    c, server = client
    images = [image_bytes(3), image_bytes(4, fmt="JPEG")]
    tensor = grpcclient.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    result = c.infer("apples", [tensor], request_id="g-1")
    runner = server.repository.get("apples").runner
    batch = runner.decode(images)
    expected = runner.infer(batch)["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    assert result.get_response().id == "g-1" and result.get_response().model_version == "1"

    raw = grpcclient.InferInput("image", list(batch.shape), "FP32")
    raw.set_data_from_numpy(batch)
    wanted = [grpcclient.InferRequestedOutput("probabilities")]
    result = c.infer("apples", [raw], outputs=wanted)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    assert result.as_numpy("embedding") is None
    assert result.as_numpy("probabilities").shape == (2, len(CLASSES))


def test_errors_map_to_grpc_status(client):
    c, _ = client
    bad = grpcclient.InferInput("image", [1, 3, 8, 8], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="but this model takes") as info:
        c.infer("apples", [bad])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as info:
        c.infer("pears", [bad])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    broken = grpcclient.InferInput("image", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"garbage"], dtype=object))
    with pytest.raises(InferenceServerException, match="cannot be decoded"):
        c.infer("apples", [broken])


def test_load_and_unload(client):
    c, _ = client
    c.unload_model("apples")
    assert not c.is_model_ready("apples")
    c.load_model("apples")
    assert c.is_model_ready("apples")
