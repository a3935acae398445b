"""Canary split, shadow mirroring and the prediction-log hook, through a running server."""

from __future__ import annotations

import random
import threading
import time

import httpx
import numpy as np
import pytest
from serve_support import image_bytes, serving, write_bundle

from visionline.serve import ROUTE_HEADER, Route


@pytest.fixture
def repo_two(tmp_path, onnx_model):
    root = tmp_path / "repo"
    write_bundle(onnx_model, root / "apples" / "1", "1")
    write_bundle(onnx_model, root / "apples" / "2", "2", threshold=0.9)
    return root


def _predict(client: httpx.Client, headers: dict | None = None) -> dict:
    response = client.post(
        "/v1/models/apples:predict", files=[("files", ("a.png", image_bytes(0), "image/png"))], headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_canary_split_follows_the_seeded_draw_and_the_header(repo_two):
    seed, percent, n = 7, 30.0, 60
    records = []
    canary = [Route(model="apples", version="2", percent=percent)]
    with (
        serving(repo_two, canary=canary, canary_seed=seed, hook=records.extend) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client,
    ):
        versions = [_predict(client)["version"] for _ in range(n)]
        assert _predict(client, {ROUTE_HEADER: "canary"})["route"] == "canary"
        assert _predict(client, {ROUTE_HEADER: "primary"})["version"] == "1"
        bad = client.post("/v1/models/apples:predict", files=[("files", ("a.png", image_bytes(0), "image/png"))],
                          headers={ROUTE_HEADER: "sideways"})
        assert bad.status_code == 400 and ROUTE_HEADER in bad.json()["error"]
    draw = random.Random(seed)
    expected = ["2" if draw.random() * 100.0 < percent else "1" for _ in range(n)]
    assert versions == expected
    assert 0.1 < versions.count("2") / n < 0.5
    assert {r.route for r in records} >= {"canary", "primary"}


def test_shadow_mirrors_without_changing_the_response(repo_two):
    records, seen = [], threading.Event()

    def hook(batch):
        records.extend(batch)
        if any(r.route == "shadow" for r in records):
            seen.set()

    shadow = [Route(model="apples", version="2")]
    with (
        serving(repo_two, version_policy="specific:1", shadow=shadow, hook=hook) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client,
    ):
        body = _predict(client)
        assert body["version"] == "1" and body["route"] == "primary"
        assert seen.wait(10)
    by_route = {r.route: r for r in records}
    assert by_route["primary"].request_id == by_route["shadow"].request_id
    assert by_route["shadow"].version == "2" and by_route["shadow"].threshold == 0.9
    np.testing.assert_allclose(
        list(by_route["primary"].probabilities.values()), list(by_route["shadow"].probabilities.values()), rtol=1e-5
    )


def test_failing_or_stuck_hook_never_fails_a_response(repo):
    calls = []

    def failing(batch):
        calls.append(len(batch))
        raise RuntimeError("monitor database is down")

    with serving(repo, hook=failing) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            for _ in range(3):
                _predict(client)
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        failures = server.metrics.registry.get_sample_value("visionline_prediction_hook_failures_total")
    assert failures == 3.0

    release = threading.Event()
    with serving(repo, hook=lambda batch: release.wait(10), prediction_log_queue=1) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            for _ in range(4):
                _predict(client)
            dropped = server.metrics.registry.get_sample_value("visionline_prediction_hook_dropped_total")
        release.set()
    assert dropped >= 2.0


def test_request_parameters_reach_the_prediction_log(repo):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    records, done = [], threading.Event()

    def hook(batch):
        records.extend(batch)
        if len(records) >= 3:
            done.set()

    with serving(repo, hook=hook) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            response = client.post(
                "/v1/models/apples:predict?delivery=D7&supplier=S2",
                files=[("files", ("a.png", image_bytes(0), "image/png"))],
            )
            assert response.status_code == 200, response.text
        image = np.array([image_bytes(1)], dtype=object)
        http_input = httpclient.InferInput("image", [1], "BYTES")
        http_input.set_data_from_numpy(image, binary_data=True)
        httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}").infer(
            "apples", [http_input], parameters={"delivery": "D8", "supplier": "S1"}
        )
        grpc_input = grpcclient.InferInput("image", [1], "BYTES")
        grpc_input.set_data_from_numpy(image)
        grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").infer(
            "apples", [grpc_input], parameters={"delivery": "D9", "line": 3}
        )
        assert done.wait(10)
    parameters = sorted((r.extra["parameters"] for r in records), key=lambda p: p["delivery"])
    assert parameters == [
        {"delivery": "D7", "supplier": "S2"},
        {"delivery": "D8", "supplier": "S1"},
        {"delivery": "D9", "line": 3},
    ]
