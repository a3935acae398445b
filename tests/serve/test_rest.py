"""The REST front end against tritonclient.http and plain httpx: every endpoint and its errors."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from serve_support import CLASSES, SIZE, image_bytes, serving, write_bundle
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def live(tmp_path_factory, onnx_model):
    root = tmp_path_factory.mktemp("rest") / "repo"
    write_bundle(onnx_model, root / "apples" / "1", "1")
    with serving(root, max_queue_delay_us=0, max_body_bytes=2 * 1024 * 1024, max_pixels=1_000_000) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    return httpclient.InferenceServerClient(f"127.0.0.1:{live.http_port}")


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=f"http://127.0.0.1:{live.http_port}", timeout=30) as c:
        yield c


def _image_input(n: int = 2) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [n], "BYTES")
    tensor.set_data_from_numpy(np.array([image_bytes(i) for i in range(n)], dtype=object))
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("apples") and client.is_model_ready("apples", "1")
    assert not client.is_model_ready("apples", "7")
    assert client.get_server_metadata()["name"] == "visionline"
    meta = client.get_model_metadata("apples")
    assert meta["versions"] == ["1"]
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "embedding"]
    assert meta["parameters"]["classes"] == CLASSES
    assert client.get_model_metadata("apples", "1")["name"] == "apples"


def test_image_bytes_binary_matches_in_process(client, live):
    result = client.infer("apples", [_image_input(2)])
    probs = result.as_numpy("probabilities")
    runner = live.repository.get("apples").runner
    expected = runner.infer(runner.decode([image_bytes(0), image_bytes(1)]))["probabilities"]
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert result.as_numpy("embedding").shape[0] == 2
    assert result.get_response()["model_version"] == "1"


def test_fp32_tensor_json_and_binary_agree(client):
    x = np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    answers = []
    for binary in (True, False):
        tensor = httpclient.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        result = client.infer("apples", [tensor], outputs=[out], request_id="req-7")
        assert result.get_response()["id"] == "req-7"
        assert result.as_numpy("embedding") is None
        answers.append(result.as_numpy("probabilities"))
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-5, atol=1e-6)
    assert answers[0].shape == (3, len(CLASSES))


def test_explicit_version_route(client):
    result = client.infer("apples", [_image_input(1)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    with pytest.raises(InferenceServerException, match="no version '9'"):
        client.infer("apples", [_image_input(1)], model_version="9")


def test_multipart_predict(http):
    files = [("files", ("a.png", image_bytes(0), "image/png")), ("files", ("b.jpg", image_bytes(1, fmt="JPEG"), "image/jpeg"))]
    response = http.post("/v1/models/apples:predict", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "apples" and body["version"] == "1"
    first = body["predictions"][0]
    assert first["filename"] == "a.png" and set(first["probabilities"]) == set(CLASSES)
    assert first["is_defect"] == (first["defect_score"] > first["threshold"])
    assert abs(sum(first["probabilities"].values()) - 1) < 1e-4
    assert first["label"] in CLASSES
    assert first["decision"] == ("defect" if first["is_defect"] else "good")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}]}, 400, "but this model takes"),
        ({"inputs": [{"name": "image", "datatype": "INT32", "shape": [1], "data": [1]}]}, 400, "must be BYTES"),
        ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1]}]}, 400, "named 'image'"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not an image"]}]}, 400, "cannot be decoded"),
        ({"inputs": []}, 400, "inputs"),
    ],
)
def test_bad_infer_requests_are_400_with_one_sentence(http, payload, status, message):
    response = http.post("/v2/models/apples/infer", json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_unknown_model_404_and_bad_content_type_400(http):
    response = http.post("/v2/models/pears/infer", json={"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert response.status_code == 404 and "pears" in response.json()["error"]
    response = http.post("/v2/models/apples/infer", content=b"a=b", headers={"content-type": "text/plain"})
    assert response.status_code == 400 and "Content-Type" in response.json()["error"]


def test_body_limit_is_413(http, live):
    big = b"x" * (2 * 1024 * 1024 + 10)
    response = http.post("/v2/models/apples/infer", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(5):
            yield b"x" * (600 * 1024)

    response = http.post("/v2/models/apples/infer", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert live.repository.is_ready("apples")


@pytest.mark.parametrize("side", [1200, 12000])
def test_pixel_limit_and_decompression_bomb_are_400(http, side):
    """Both sizes are refused from the header, before any pixel is decoded."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    files = [("files", ("big.png", buffer.getvalue(), "image/png"))]
    response = http.post("/v1/models/apples:predict", files=files)
    assert response.status_code == 400
    assert f"{side}x{side} pixels, above the limit of 1,000,000" in response.json()["error"]


def test_metrics_split_by_step_model_and_version(client, http):
    client.infer("apples", [_image_input(1)])
    text = http.get("/metrics").text
    for step in ("queue", "preprocess", "inference", "postprocess"):
        assert f'visionline_step_duration_seconds_count{{model="apples",step="{step}",version="1"}}' in text
    assert 'visionline_requests_total{model="apples",protocol="http",status="200",version="1"}' in text
    assert 'visionline_batch_size_bucket{le="1.0",model="apples",version="1"}' in text


def test_repository_index_load_unload(client, live):
    index = client.get_model_repository_index()
    assert index == [{"name": "apples", "version": "1", "state": "READY", "reason": ""}]
    client.unload_model("apples")
    assert not client.is_model_ready("apples")
    with pytest.raises(InferenceServerException, match="no version in service|not served"):
        client.infer("apples", [_image_input(1)])
    client.load_model("apples")
    assert client.is_model_ready("apples")
    with pytest.raises(InferenceServerException, match="not in repository"):
        client.load_model("pears")


def test_openapi_documents_infer_body(http):
    spec = http.get("/openapi.json").json()
    body = spec["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]
    assert "inputs" in body["content"]["application/json"]["schema"]["properties"]
    assert "/v1/models/{model}:predict" in spec["paths"]


def test_access_log_is_json_with_request_id(http, caplog):
    import logging

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "request_id", None) == "abc-123"]

    with caplog.at_level(logging.INFO, logger="visionline.serve.access"):
        http.get("/v2/health/live", headers={"x-request-id": "abc-123"})
        deadline = time.monotonic() + 5  # the line is written after the response, by the log thread
        while not logged() and time.monotonic() < deadline:
            time.sleep(0.01)
    record = logged()[0]
    from visionline.serve._middleware import JsonFormatter

    line = json.loads(JsonFormatter().format(record))
    assert line["status"] == 200 and line["path"] == "/v2/health/live" and line["duration_ms"] >= 0


def test_unexpected_failure_is_a_json_500_with_the_request_id(live, http, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(live.service, "infer", broken)
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE], "data": [0.0] * (3 * SIZE * SIZE)}
    response = http.post("/v2/models/apples/infer", json={"inputs": [tensor]}, headers={"x-request-id": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error; see the server log for the request id."}
    assert response.headers["x-request-id"] == "boom-1"
