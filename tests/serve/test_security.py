"""API keys, overload (503 + Retry-After), request timeouts (504) and draining, over REST and gRPC."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import image_bytes, serving
from tritonclient.utils import InferenceServerException

FILES = [("files", ("a.png", image_bytes(0), "image/png"))]


def test_api_keys_separate_inference_and_management(repo):
    with serving(repo, api_key="infer-key", admin_key="admin-key") as server:
        url = f"http://127.0.0.1:{server.http_port}"
        with httpx.Client(base_url=url) as client:
            assert client.get("/v2/health/ready").status_code == 200  # probes need no key
            response = client.post("/v1/models/apples:predict", files=FILES)
            assert response.status_code == 401 and "API key" in response.json()["error"]
            ok = client.post("/v1/models/apples:predict", files=FILES, headers={"Authorization": "Bearer infer-key"})
            assert ok.status_code == 200
            assert client.post("/v1/models/apples:predict", files=FILES, headers={"X-API-Key": "infer-key"}).status_code == 200
            index = client.post("/v2/repository/index", headers={"Authorization": "Bearer infer-key"})
            assert index.status_code == 401 and "admin key" in index.json()["error"]
            assert client.post("/v2/repository/index", headers={"Authorization": "Bearer admin-key"}).status_code == 200

        triton = httpclient.InferenceServerClient(url[7:])
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image_bytes(1)], dtype=object))
        with pytest.raises(InferenceServerException, match="API key"):
            triton.infer("apples", [tensor])
        assert triton.infer("apples", [tensor], headers={"Authorization": "Bearer infer-key"}).as_numpy("probabilities").shape == (1, 3)

        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        gt = grpcclient.InferInput("image", [1], "BYTES")
        gt.set_data_from_numpy(np.array([image_bytes(1)], dtype=object))
        with pytest.raises(InferenceServerException) as info:
            g.infer("apples", [gt])
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        assert g.infer("apples", [gt], headers={"authorization": "Bearer infer-key"}).as_numpy("probabilities").shape == (1, 3)
        with pytest.raises(InferenceServerException):
            g.get_model_repository_index(headers={"authorization": "Bearer infer-key"})
        assert g.get_model_repository_index(headers={"authorization": "Bearer admin-key"}).models


def _slow(served, seconds: float, gate: threading.Event | None = None):
    original = served.runner.infer

    def slow_infer(batch):
        if gate is not None:
            gate.wait(10)
        time.sleep(seconds)
        return original(batch)

    served.runner.infer = slow_infer


def test_overload_is_503_with_retry_after_and_recovers(repo):
    with serving(repo, max_batch_size=1, max_queue_size=1, max_queue_delay_us=0) as server:
        gate = threading.Event()
        _slow(server.repository.get("apples"), 0.0, gate)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as client:
            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(client.post, "/v1/models/apples:predict", files=FILES) for _ in range(6)]
                time.sleep(1.0)
                gate.set()
                responses = [f.result() for f in futures]
            statuses = sorted(r.status_code for r in responses)
            assert statuses.count(503) >= 1 and statuses.count(200) >= 1 and set(statuses) <= {200, 503}
            refused = next(r for r in responses if r.status_code == 503)
            assert refused.headers["retry-after"] == "1" and "queue" in refused.json()["error"]
            assert client.post("/v1/models/apples:predict", files=FILES).status_code == 200


def _grpc_image() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image_bytes(1)], dtype=object))
    return tensor


def test_grpc_overload_is_unavailable_and_recovers(repo):
    with serving(repo, max_batch_size=1, max_queue_size=1, max_queue_delay_us=0) as server:
        gate = threading.Event()
        _slow(server.repository.get("apples"), 0.0, gate)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

        def call() -> str:
            try:
                client.infer("apples", [_grpc_image()])
                return "OK"
            except InferenceServerException as exc:
                assert "queue" in exc.message()
                return exc.status()

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(call) for _ in range(6)]
            time.sleep(1.0)
            gate.set()
            statuses = [f.result() for f in futures]
        assert statuses.count("StatusCode.UNAVAILABLE") >= 1 and statuses.count("OK") >= 1
        assert set(statuses) <= {"OK", "StatusCode.UNAVAILABLE"}
        assert call() == "OK"


def test_request_timeout_is_504(repo):
    with serving(repo, request_timeout_s=0.2) as server:
        _slow(server.repository.get("apples"), 1.0)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as client:
            response = client.post("/v1/models/apples:predict", files=FILES)
        with pytest.raises(InferenceServerException, match="longer than 0.2 s") as info:
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").infer("apples", [_grpc_image()])
    assert response.status_code == 504 and "longer than 0.2 s" in response.json()["error"]
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_shutdown_lets_in_flight_grpc_requests_finish(repo):
    with serving(repo) as server:
        gate = threading.Event()
        _slow(server.repository.get("apples"), 0.0, gate)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(client.infer, "apples", [_grpc_image()])
            time.sleep(0.3)
            server.stop()
            time.sleep(0.3)
            gate.set()
            assert in_flight.result(timeout=30).as_numpy("probabilities").shape == (1, 3)
