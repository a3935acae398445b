"""An anomaly bundle in the server: score and decision by default, the anomaly map when a client
asks for it (a requested v2 output over REST and gRPC, `anomaly_map=true` on /v1 predict), the
prediction log records normalised anomaly scores, and drift detection runs on them."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from anomaly_lifecycle_support import IMAGE_SIZE, export_bundle
from PIL import Image
from serve_support import serving

MODEL = "apples"
"""The repository folder is the bundle's name, so the log and the bundle's reference agree."""


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _apples(root, seed: int, n: int, drift: str | None = None) -> list[bytes]:
    """n good apples from the synthetic line (optionally under a drift condition)."""
    from visionline.synth import DriftConfig, SynthConfig, generate_dataset

    drifts = {"drift": DriftConfig(kind=drift, ramp=1)} if drift else {}
    config = SynthConfig(size=IMAGE_SIZE, seed=seed, defect_rate=0.0, **drifts)
    generate_dataset(config, root, n)
    return [p.read_bytes() for p in sorted(root.rglob("*.jpg"))]


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_fitted_apples):
    from visionline.export import generate_keys
    from visionline.monitor import MonitorDB, PredictionLogger

    root = tmp_path_factory.mktemp("anomaly-serve")
    fitted = shared_fitted_apples
    key, public = generate_keys(root / "keys")
    repo = root / "repo"
    export_bundle(fitted, repo / MODEL / "1", key)
    db = MonitorDB(f"sqlite:///{root}/monitor.db")
    logger = PredictionLogger(db)
    with serving(
        repo, hook=logger, max_queue_delay_us=0, trust_store=public, require_signature=True
    ) as server:
        yield server, fitted, db, logger, root
    logger.close()


def _images(fitted, n: int = 3) -> list[bytes]:
    return [p.read_bytes() for p in sorted(fitted.raw.rglob("*.jpg"))[:n]]


@pytest.mark.slow
def test_rest_gives_score_and_decision_and_the_map_only_when_asked(served):
    server, fitted, *_ = served
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    images = _images(fitted)
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    result = client.infer(MODEL, [tensor])
    names = {o["name"] for o in result.get_response()["outputs"]}
    assert names == {"score", "decision", "probabilities", "embedding"}
    runner = server.repository.get(MODEL).runner
    expected = runner.model.predict(images)
    np.testing.assert_allclose(result.as_numpy("score"), expected.anomaly_scores, rtol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("decision"), expected.flagged)

    wanted = [httpclient.InferRequestedOutput(n) for n in ("score", "anomaly_map")]
    result = client.infer(MODEL, [tensor], outputs=wanted)
    maps = result.as_numpy("anomaly_map")
    assert maps.shape == (len(images), 1, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(maps[:, 0], expected.anomaly_maps, rtol=1e-4, atol=1e-4)
    assert result.as_numpy("decision") is None

    meta = client.get_model_metadata(MODEL)
    outputs = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert outputs["decision"] == "BOOL" and outputs["anomaly_map"] == "FP32"
    assert meta["parameters"]["classes"] == ["good", "anomaly"]


@pytest.mark.slow
def test_predict_adds_the_map_on_request_and_refuses_a_bad_flag(served):
    server, fitted, *_ = served
    images = _images(fitted, 2)
    files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as http:
        plain = http.post(f"/v1/models/{MODEL}:predict", files=files).json()["predictions"]
        mapped = http.post(f"/v1/models/{MODEL}:predict?anomaly_map=true", files=files).json()[
            "predictions"
        ]
        bad = http.post(f"/v1/models/{MODEL}:predict?anomaly_map=maybe", files=files)
    assert "anomaly_map" not in plain[0]
    score = plain[0]["anomaly_score"]
    assert plain[0]["defect_score"] == pytest.approx(score / (score + _threshold(server)), abs=1e-5)
    assert plain[0]["is_defect"] == (score > _threshold(server))
    assert np.asarray(mapped[1]["anomaly_map"]).shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert bad.status_code == 400 and "anomaly_map must be true or false" in bad.json()["error"]


def _threshold(server) -> float:
    return server.repository.get(MODEL).runner.model.anomaly_threshold


@pytest.mark.slow
def test_grpc_sends_the_map_as_an_extra_requested_output(served):
    server, fitted, *_ = served
    images = _images(fitted, 2)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        tensor = grpcclient.InferInput("image", [2], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=object))
        plain = client.infer(MODEL, [tensor])
        assert plain.as_numpy("anomaly_map") is None
        wanted = [grpcclient.InferRequestedOutput(n) for n in ("decision", "anomaly_map")]
        mapped = client.infer(MODEL, [tensor], outputs=wanted)
    np.testing.assert_array_equal(mapped.as_numpy("decision"), plain.as_numpy("decision"))
    assert mapped.as_numpy("anomaly_map").shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.slow
def test_prediction_log_holds_anomaly_scores_and_drift_runs_on_them(served):
    from visionline.monitor import DriftConfig, Reference, check_drift
    from visionline.monitor._drift import Detector

    server, _, db, logger, root = served
    steady = _apples(root / "steady", seed=101, n=20)
    moved = _apples(root / "moved", seed=102, n=40, drift="camera_shift")
    with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http:
        for name, images in (("steady", steady), ("moved", moved)):
            files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
            response = http.post(f"/v1/models/{MODEL}:predict?delivery={name}", files=files)
            assert response.status_code == 200, response.text
            time.sleep(0.05)
    assert logger.flush()
    frame = db.frame(model=MODEL)
    moved_rows = frame[frame["delivery_id"] == "moved"]
    assert len(moved_rows) == 40 and set(frame.iloc[0]["probabilities"]) == {"good", "anomaly"}
    assert moved_rows["defect_score"].between(0, 1).all()
    assert (moved_rows["flagged"] == (moved_rows["defect_score"] > 0.5)).all()

    reference = Reference.from_bundle(server.config.repository / MODEL / "1")
    config = DriftConfig(size=20, persistence=1, detectors=(Detector.SCORE, Detector.EMBEDDING))
    windows = check_drift(db, reference, config)
    assert len(windows) >= 2  # the last closed window holds only images of the moved camera
    last = windows[-1]
    assert {r.detector.value: r.n for r in last.results} == {"score_ks": 20, "embedding_mmd": 20}
    # the map embedding sees the moved camera; the score test ran on the logged anomaly scores
    # (whether 20 images of this tiny detector move its score distribution is not the point)
    assert "embedding_mmd" in last.drifted
