"""Keys, TLS, overload (503 + Retry-After), request timeouts (504) and draining, over REST and gRPC."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import image_bytes, self_signed_certificate, serving
from tritonclient.utils import InferenceServerException

from visionline.errors import ConfigError
from visionline.serve import ServerConfig

FILES = [("files", ("a.png", image_bytes(0), "image/png"))]


INFERENCE_KEY = "inference-key-0123456789"
MANAGEMENT_KEY = "management-key-0123456789"
KEYS = {"inference_key": INFERENCE_KEY, "management_key": MANAGEMENT_KEY}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.10.20", "plant-server.local"])
def test_a_network_address_without_keys_is_refused(tmp_path, host):
    with pytest.raises(ConfigError, match=f"Listening on {re.escape(host)} needs a management key"):
        ServerConfig(repository=tmp_path, host=host)
    with pytest.raises(ConfigError, match="needs an inference key.*--public-inference"):
        ServerConfig(repository=tmp_path, host=host, management_key=MANAGEMENT_KEY)
    with pytest.raises(ConfigError, match="needs a management key"):
        ServerConfig(repository=tmp_path, host=host, inference_key=INFERENCE_KEY)
    assert ServerConfig(repository=tmp_path, host=host, **KEYS).inference_key.get_secret_value() == INFERENCE_KEY
    public = ServerConfig(repository=tmp_path, host=host, management_key=MANAGEMENT_KEY, public_inference=True)
    assert public.inference_key is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.9", "localhost", "::1", "[::1]"])
def test_loopback_may_run_without_keys(tmp_path, host):
    assert ServerConfig(repository=tmp_path, host=host).management_key is None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"inference_key": "short"}, "inference key has 5 characters; use at least 16"),
        ({"management_key": "with space 0123456789"}, "printable ASCII without spaces"),
        ({"inference_key": MANAGEMENT_KEY, "management_key": MANAGEMENT_KEY}, "must differ"),
        ({"inference_key": INFERENCE_KEY, "public_inference": True}, "contradict"),
        ({"tls_cert": Path("server.crt")}, "go together"),
        ({"tls_cert": Path("none.crt"), "tls_key": Path("none.key")}, "No TLS certificate at none.crt"),
    ],
)
def test_weak_or_contradicting_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        ServerConfig(repository=tmp_path, **settings)


def test_a_certificate_with_the_wrong_key_is_refused(tmp_path):
    cert, _ = self_signed_certificate(tmp_path / "a")
    _, other_key = self_signed_certificate(tmp_path / "b")
    with pytest.raises(ConfigError, match="do not load as a pair"):
        ServerConfig(repository=tmp_path, tls_cert=cert, tls_key=other_key)


def test_keys_are_hidden_in_the_config_repr(tmp_path):
    config = ServerConfig(repository=tmp_path, **KEYS)
    assert INFERENCE_KEY not in repr(config) and MANAGEMENT_KEY not in str(config.model_dump())


def test_rest_keys_separate_inference_and_management(repo):
    with serving(repo, **KEYS) as server:
        url = f"http://127.0.0.1:{server.http_port}"
        with httpx.Client(base_url=url) as client:
            for open_path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                assert client.get(open_path).status_code == 200  # probes and Prometheus need no key
            missing = client.post("/v1/models/apples:predict", files=FILES)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            assert "inference key" in missing.json()["error"]
            assert client.post("/v1/models/apples:predict", files=FILES, headers=_bearer("wrong-key-0123456789")).status_code == 401
            assert client.get("/v2/models/apples", headers={"X-API-Key": "nope"}).status_code == 401
            for key in (INFERENCE_KEY, MANAGEMENT_KEY):  # the management key may also predict
                assert client.post("/v1/models/apples:predict", files=FILES, headers=_bearer(key)).status_code == 200
            assert client.post("/v1/models/apples:predict", files=FILES, headers={"X-API-Key": INFERENCE_KEY}).status_code == 200
            assert client.get("/v2", headers=_bearer(INFERENCE_KEY)).status_code == 200

            for path in ("/v2/repository/index", "/v2/repository/models/apples/load", "/v2/repository/models/apples/unload"):
                assert client.post(path).status_code == 401
                assert client.post(path, headers=_bearer("wrong-key-0123456789")).status_code == 401
                denied = client.post(path, headers=_bearer(INFERENCE_KEY))
                assert denied.status_code == 403 and "needs the management key" in denied.json()["error"]
            assert client.post("/v2/repository/index", headers=_bearer(MANAGEMENT_KEY)).json()[0]["name"] == "apples"
            assert client.post("/v2/repository/models/apples/unload", headers=_bearer(MANAGEMENT_KEY)).status_code == 200
            assert client.post("/v2/repository/models/apples/load", headers=_bearer(MANAGEMENT_KEY)).status_code == 200
            assert client.get("/v2/models/apples/ready", headers=_bearer(MANAGEMENT_KEY)).status_code == 200
            metrics = client.get("/metrics").text
        assert 'visionline_rejected_requests_total{reason="unauthorized"} 9.0' in metrics
        assert 'visionline_rejected_requests_total{reason="forbidden"} 3.0' in metrics

        triton = httpclient.InferenceServerClient(url[7:])
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image_bytes(1)], dtype=object))
        with pytest.raises(InferenceServerException, match="inference key"):
            triton.infer("apples", [tensor])
        assert triton.infer("apples", [tensor], headers=_bearer(INFERENCE_KEY)).as_numpy("probabilities").shape == (1, 3)


def _grpc_status(call) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status()


def test_grpc_keys_follow_the_same_rules(repo):
    with serving(repo, **KEYS) as server:
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        inference, management = {"authorization": f"Bearer {INFERENCE_KEY}"}, {"authorization": f"Bearer {MANAGEMENT_KEY}"}
        assert g.is_server_live() and g.is_server_ready()  # probes need no key
        assert _grpc_status(lambda: g.infer("apples", [_grpc_image()])) == "StatusCode.UNAUTHENTICATED"
        wrong = {"authorization": "Bearer wrong-key-0123456789"}
        assert _grpc_status(lambda: g.infer("apples", [_grpc_image()], headers=wrong)) == "StatusCode.UNAUTHENTICATED"
        assert _grpc_status(lambda: g.get_server_metadata()) == "StatusCode.UNAUTHENTICATED"
        assert _grpc_status(lambda: g.is_model_ready("apples")) == "StatusCode.UNAUTHENTICATED"
        for headers in (inference, management, {"x-api-key": INFERENCE_KEY}):
            assert g.infer("apples", [_grpc_image()], headers=headers).as_numpy("probabilities").shape == (1, 3)
        assert g.get_model_metadata("apples", headers=inference).name == "apples"
        for call in (g.get_model_repository_index, partial(g.unload_model, "apples")):
            assert _grpc_status(partial(call, headers=None)) == "StatusCode.UNAUTHENTICATED"
            assert _grpc_status(partial(call, headers=inference)) == "StatusCode.PERMISSION_DENIED"
        g.unload_model("apples", headers=management)
        assert not g.is_model_ready("apples", headers=inference)
        g.load_model("apples", headers=management)
        assert g.get_model_repository_index(headers=management).models[0].name == "apples"


def test_an_inference_key_alone_closes_the_repository_api(repo):
    with serving(repo, inference_key=INFERENCE_KEY) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            closed = client.post("/v2/repository/models/apples/unload", headers=_bearer(INFERENCE_KEY))
            assert closed.status_code == 403 and "no management key" in closed.json()["error"]
            assert client.post("/v2/repository/index").status_code == 403
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert _grpc_status(lambda: g.unload_model("apples")) == "StatusCode.PERMISSION_DENIED"
        assert server.repository.is_ready("apples", None)


def test_public_inference_keeps_the_repository_api_closed(repo):
    with serving(repo, management_key=MANAGEMENT_KEY, public_inference=True) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            assert client.post("/v1/models/apples:predict", files=FILES).status_code == 200
            assert client.post("/v2/repository/models/apples/unload").status_code == 401
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert g.infer("apples", [_grpc_image()]).as_numpy("probabilities").shape == (1, 3)
        assert _grpc_status(lambda: g.unload_model("apples")) == "StatusCode.UNAUTHENTICATED"


def test_tls_with_keys_for_tritonclient_over_https_and_secure_grpc(repo, tmp_path):
    cert, key = self_signed_certificate(tmp_path / "tls")
    with serving(repo, tls_cert=cert, tls_key=key, **KEYS) as server:
        address = f"127.0.0.1:{server.http_port}"
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image_bytes(1)], dtype=object))
        https = httpclient.InferenceServerClient(address, ssl=True, ssl_options={"ca_certs": str(cert)})
        assert https.is_server_ready()
        assert https.infer("apples", [tensor], headers=_bearer(INFERENCE_KEY)).as_numpy("probabilities").shape == (1, 3)
        with pytest.raises(InferenceServerException, match="inference key"):
            https.infer("apples", [tensor])
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port gets no answer
            httpx.get(f"http://{address}/v2/health/live", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client that trusts another CA
            httpx.get(f"https://{address}/v2/health/live", timeout=5)

        secure = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}", ssl=True, root_certificates=str(cert))
        headers = {"authorization": f"Bearer {INFERENCE_KEY}"}
        assert secure.infer("apples", [_grpc_image()], headers=headers).as_numpy("probabilities").shape == (1, 3)
        assert _grpc_status(lambda: secure.infer("apples", [_grpc_image()])) == "StatusCode.UNAUTHENTICATED"
        plain = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert _grpc_status(lambda: plain.infer("apples", [_grpc_image()], headers=headers, client_timeout=5)) in (
            "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
        )


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
