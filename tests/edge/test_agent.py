"""The agent loop: each item is committed to the outbox, then signalled, in order; fail-safes
are counted in the outbox and the metrics; images of flagged items are kept."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from edge_agent_support import RecordingSink, signed_bundle
from edge_support import png

from visionline.edge import Decider, FailSafe, Frame, ImageStore, LineAgent, Outbox, SynthSource
from visionline_edge import load_bundle


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bundle, store = signed_bundle(tmp_path_factory.mktemp("agent"))
    return load_bundle(bundle, trust_store=store, require_signature=True)


class ListSource:
    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames

    def __iter__(self):
        return iter(self.frames)

    def close(self) -> None:
        pass


class BrokenSink(RecordingSink):
    def send(self, verdict) -> None:
        from visionline.errors import VisionlineError

        raise VisionlineError("PLC unreachable; check the cable.")


def test_every_item_is_logged_and_signalled_in_order(model: Any, tmp_path: Path) -> None:
    images = [png((230, 230, 230)), png((10, 10, 10)), png((5, 5, 5))[:20], png((220, 220, 220))]
    frames = [Frame(f"item-{i}", time.time(), data=b) for i, b in enumerate(images)]
    sink, outbox = RecordingSink(), Outbox(tmp_path / "outbox.db")
    store = ImageStore(tmp_path / "images", 1 << 20)
    agent = LineAgent(ListSource(frames), Decider(model, 5000, FailSafe.reject, line="L1"),
                      outbox, sink, store, sample_every=0)
    stats = agent.run()
    assert [v.item_id for v in sink.sent] == [f"item-{i}" for i in range(4)]
    assert [v.reject for v in sink.sent] == [False, True, True, False]
    assert sink.sent[2].fail_safe and sink.sent[2].reason == "corrupt"
    assert [r["request_id"] for r in outbox.pending(10)] == [f"item-{i}" for i in range(4)]
    status = outbox.status()
    assert status["counts"] == {"verdicts": 4, "passed": 2, "rejected": 2, "fail_safe_corrupt": 1}
    assert status["version"] == "apples:1" and status["line"] == "L1"
    assert stats.fail_safe == {"corrupt": 1} and stats.frames == 4
    metrics = agent.metrics.render().decode()
    assert 'visionline_edge_fail_safe_total{reason="corrupt"} 1.0' in metrics
    assert "visionline_edge_frames_total 4.0" in metrics
    assert "visionline_edge_outbox_backlog 4.0" in agent.metrics.render().decode()
    assert len(list((tmp_path / "images").iterdir())) == 2  # the two rejected items


def test_a_failing_sink_is_counted_and_the_line_goes_on(model: Any, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    agent = LineAgent(SynthSource(rate=500, count=3, size=64), Decider(model, 5000), outbox,
                      BrokenSink())
    stats = agent.run()
    assert stats.frames == 3 and stats.sink_errors == 3
    assert outbox.backlog()[0] == 3
    assert "visionline_edge_sink_errors_total 3.0" in agent.metrics.render().decode()


def test_deadline_misses_are_counted(model: Any, tmp_path: Path) -> None:
    frames = [Frame(f"late-{i}", time.time() - 1, data=png((1, 1, 1))) for i in range(2)]
    agent = LineAgent(ListSource(frames), Decider(model, 10, FailSafe.pass_),
                      Outbox(tmp_path / "o.db"), RecordingSink())
    agent.run(max_items=2)
    assert "visionline_edge_deadline_misses_total 2.0" in agent.metrics.render().decode()
    assert agent.outbox.status()["counts"]["fail_safe_deadline"] == 2


def test_metrics_are_served_over_http(tmp_path: Path) -> None:
    import httpx
    from edge_agent_support import free_port

    from visionline.edge import AgentMetrics

    metrics, port = AgentMetrics(), free_port()
    server, thread = metrics.serve(port)
    metrics.frames.inc(3)
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        thread.join(5)
    assert "visionline_edge_frames_total 3.0" in body


class StallingSource(ListSource):
    """Two frames with a silent camera in between."""

    def __iter__(self):
        yield Frame("first", time.time(), data=png((200, 200, 200)))
        time.sleep(0.8)
        yield Frame("second", time.time(), data=png((200, 200, 200)))


def test_a_silent_camera_raises_an_alarm_that_clears(model: Any, tmp_path: Path, caplog) -> None:
    agent = LineAgent(StallingSource([]), Decider(model, 5000), Outbox(tmp_path / "o.db"),
                      camera_timeout_s=0.2)
    with caplog.at_level("WARNING", logger="visionline.edge"):
        agent.run()
    messages = [r.getMessage() for r in caplog.records]
    assert any("no frame from the camera" in m for m in messages)
    assert "frames arrive again" in messages and not agent.camera_alarm
    assert "visionline_edge_camera_alarm 0.0" in agent.metrics.render().decode()


def test_a_buffered_plc_backlog_is_a_metric(model: Any, tmp_path: Path) -> None:
    from visionline.edge import BufferedSink

    sink = BufferedSink(BrokenSink(), retry_interval=60)
    agent = LineAgent(SynthSource(rate=500, count=2, size=64), Decider(model, 5000),
                      Outbox(tmp_path / "o.db"), sink)
    agent.run()
    sink.close()
    metrics = agent.metrics.render().decode()
    assert "visionline_edge_plc_backlog 2.0" in metrics and "visionline_edge_plc_alarm 1.0" in metrics


def test_several_views_of_one_item_give_one_verdict(model: Any, tmp_path: Path) -> None:
    light, dark = png((230, 230, 230)), png((10, 10, 10))
    views = [("a1_top", light), ("a1_side", dark), ("a2_top", light), ("a2_side", light),
             ("a3_top", dark), ("a4_top", light), ("a4_side", png((5, 5, 5))[:20])]
    frames = [Frame(name, time.time(), data=data) for name, data in views]
    sink, outbox = RecordingSink(), Outbox(tmp_path / "outbox.db")
    agent = LineAgent(ListSource(frames), Decider(model, 5000), outbox, sink, views=2)
    stats = agent.run()
    # a1: the dark side decides; a3 lost its second shot and is decided on one view; a4 has a
    # corrupt view, so the item cannot be vouched for and takes the fail-safe
    assert [(v.item_id, v.reject, v.fail_safe) for v in sink.sent] == [
        ("a1", True, False), ("a2", False, False), ("a3", True, False), ("a4", True, True),
    ]
    assert stats.frames == 7 and stats.items == 4
    records = outbox.pending(10)
    assert [r["request_id"] for r in records] == ["a1", "a2", "a3", "a4"]
    assert [r["views"] for r in records] == [2, 2, 1, 2]


def test_an_anomaly_bundle_decides_on_the_line(tmp_path: Path) -> None:
    from edge_support import make_anomaly_bundle

    from visionline.export import generate_keys

    private, public = generate_keys(tmp_path / "keys")
    bundle = make_anomaly_bundle(tmp_path / "anomaly", private, threshold=1.0)
    model = load_bundle(bundle, public, require_signature=True)
    images = [png((230, 230, 230)), png((10, 10, 10)), png((200, 190, 180))]
    frames = [Frame(f"i{i}", time.time(), data=b) for i, b in enumerate(images)]
    sink, outbox = RecordingSink(), Outbox(tmp_path / "outbox.db")
    LineAgent(ListSource(frames), Decider(model, 5000), outbox, sink).run()
    expected = model.predict(images)
    assert [v.reject for v in sink.sent] == expected.flagged.tolist() == [False, True, False]
    assert [v.model_version for v in sink.sent] == ["apples-anomaly:1"] * 3
    records = outbox.pending(10)
    assert [r["anomaly_score"] for r in records] == pytest.approx(expected.anomaly_scores.tolist())
    assert records[1]["decision"] == "defect" and set(records[1]["probabilities"]) == {
        "good", "anomaly"}
    assert records[1]["defect_score"] > 0.5 > records[0]["defect_score"]


def test_kept_images_travel_with_their_records_when_uploading(model: Any, tmp_path: Path) -> None:
    import base64

    images = [png((230, 230, 230)), png((10, 10, 10)), png((220, 220, 220))]
    frames = [Frame(f"i{i}", time.time(), data=b) for i, b in enumerate(images)]
    outbox = Outbox(tmp_path / "outbox.db")
    LineAgent(ListSource(frames), Decider(model, 5000), outbox, RecordingSink(),
              upload_images=True).run()
    records = outbox.pending(10)
    assert [("image" in r) for r in records] == [False, True, False]  # the flagged one
    assert base64.b64decode(records[1]["image"]) == images[1]


def test_the_plc_sees_every_verdict_in_order_before_its_deadline(model: Any, tmp_path: Path) -> None:
    from visionline.edge import BufferedSink, open_sink
    from visionline.edge._simulator import SimulatedPlc

    plc = SimulatedPlc().start()
    try:
        sink = BufferedSink(open_sink(plc.url), background=True)  # as visionline edge run
        outbox = Outbox(tmp_path / "outbox.db")
        agent = LineAgent(SynthSource(rate=20, count=12, size=64), Decider(model, 2000), outbox,
                          sink)
        agent.run()
        sink.flush(10)
        sink.close()
        received = plc.received()
    finally:
        plc.stop()
    records = outbox.pending(100)
    assert [(w.item_id, w.reject) for w in received] == [
        (r["request_id"], r["flagged"]) for r in records]
    assert [w.sequence for w in received] == list(range(1, 13))
    deadline = {r["request_id"]: r["ts"] + 2.0 for r in records}
    assert all(w.received_at <= deadline[w.item_id] for w in received)
    assert not any(r["route"] == "fail_safe" for r in records)
