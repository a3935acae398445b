"""Item ids from the PLC's trigger counter: each frame is named by the tag's value when it
arrives (read from a real asyncua server on 127.0.0.1), and a PLC that does not answer leaves
frames their source ids without stopping the line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from edge_agent_support import RecordingSink, free_port, signed_bundle
from edge_support import png

from visionline.edge import Decider, Frame, LineAgent, Outbox, item_key
from visionline.edge._config import validate_edge_config
from visionline.edge._simulator import SimulatedPlc
from visionline.edge._trigger import TaggedSource, open_item_tag
from visionline.errors import ConfigError
from visionline_edge import load_bundle


class TriggeredCamera:
    """A camera the PLC fires: the trigger counter goes up, then the frame arrives."""

    def __init__(self, plc: SimulatedPlc | None, counts: list[int]) -> None:
        self.plc, self.counts = plc, counts

    def __iter__(self):
        for n, count in enumerate(self.counts):
            if self.plc is not None:
                self.plc.fire(count)
            yield Frame(f"cam-{n}", time.time(), data=png((230, 230, 230) if n % 2 else (9, 9, 9)))

    def close(self) -> None:
        pass


def test_frames_are_named_by_the_plcs_trigger_counter(tmp_path: Path) -> None:
    bundle, store = signed_bundle(tmp_path)
    model = load_bundle(bundle, trust_store=store, require_signature=True)
    plc = SimulatedPlc().start()
    try:
        source = TaggedSource(TriggeredCamera(plc, [4101, 4102, 4103]), open_item_tag(plc.trigger_url))
        sink, outbox = RecordingSink(), Outbox(tmp_path / "outbox.db")
        LineAgent(source, Decider(model, 5000), outbox, sink).run()
        source.close()
    finally:
        plc.stop()
    assert [v.item_id for v in sink.sent] == ["4101", "4102", "4103"]
    assert [item_key(v.item_id) for v in sink.sent] == [4101, 4102, 4103]  # what the PLC compares
    assert [r["request_id"] for r in outbox.pending(10)] == ["4101", "4102", "4103"]
    assert source.errors == 0


def test_a_silent_plc_leaves_the_source_ids_and_the_line_goes_on(tmp_path: Path, caplog) -> None:
    bundle, store = signed_bundle(tmp_path)
    model = load_bundle(bundle, trust_store=store, require_signature=True)
    tag = open_item_tag(f"opcua://127.0.0.1:{free_port()}?node=ns=2;s=Line1.Trigger&timeout=0.3")
    source = TaggedSource(TriggeredCamera(None, [1, 2]), tag)
    sink = RecordingSink()
    agent = LineAgent(source, Decider(model, 5000), Outbox(tmp_path / "o.db"), sink)
    with caplog.at_level("ERROR", logger="visionline.edge"):
        agent.run()
    assert [v.item_id for v in sink.sent] == ["cam-0", "cam-1"] and source.errors == 2
    assert "did not give the item tag ns=2;s=Line1.Trigger" in caplog.records[0].getMessage()
    assert "visionline_edge_item_tag_errors 2.0" in agent.metrics.render().decode()


def test_item_tag_urls_that_cannot_work_are_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"names no node: add \?node="):
        open_item_tag("opcua://plc:4840")
    with pytest.raises(ConfigError, match="must be an OPC UA node"):
        open_item_tag("modbus://plc:502")
    with pytest.raises(ConfigError, match="item_tag .--item-tag. is invalid"):
        validate_edge_config({"source": "synth://", "bundle": "b", "pubkey": "k.pub",
                              "item_tag": "http://plc"})
