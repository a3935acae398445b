"""Fleet roll-out through a channel folder: a tampered bundle is refused and the line keeps its
model; an agreeing candidate is shadowed then switched in; a disagreeing one is rejected in
shadow; a switched model whose verdicts then diverge is rolled back by itself."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_agent_support import RecordingSink
from edge_support import make_bundle, png

from visionline.edge import Decider, Frame, LineAgent, Outbox, Rollout
from visionline_edge import load_bundle

BRIGHT, DARK = png((230, 230, 230)), png((10, 10, 10))


class ListSource:
    def __init__(self, images: list[bytes]) -> None:
        self.images = images

    def __iter__(self):
        for i, data in enumerate(self.images):
            yield Frame(f"item-{i}", time.time(), data=data)

    def close(self) -> None:
        pass


@pytest.fixture
def plant(tmp_path: Path) -> dict[str, Any]:
    from visionline.export import generate_keys

    private, public = generate_keys(tmp_path / "keys")
    channel = tmp_path / "channel" / "L1"
    channel.mkdir(parents=True)
    v1 = make_bundle(tmp_path / "v1", private)
    return {"private": private, "public": public, "channel": channel, "tmp": tmp_path,
            "model": load_bundle(v1, public, require_signature=True)}


def _run(plant: dict[str, Any], images: list[bytes], shadow: int) -> tuple[RecordingSink, Any]:
    decider = Decider(plant["model"], deadline_ms=5000, line="L1")
    rollout = Rollout(decider, plant["channel"].parent, pubkey=plant["public"],
                      shadow_items=shadow, min_agreement=0.9, poll_s=0.0)
    sink = RecordingSink()
    outbox = Outbox(plant["tmp"] / "outbox.db")
    LineAgent(ListSource(images), decider, outbox, sink, rollout=rollout).run()
    decider.close()
    return sink, (rollout, outbox.status())


def test_a_tampered_bundle_is_refused_and_the_line_keeps_its_model(plant) -> None:
    bad = make_bundle(plant["channel"] / "apples-2", plant["private"], version="2")
    manifest = json.loads((bad / "bundle.json").read_text())
    manifest["threshold"] = 0.01
    (bad / "bundle.json").write_text(json.dumps(manifest))
    sink, (rollout, status) = _run(plant, [BRIGHT, DARK, BRIGHT], shadow=2)
    assert [e.kind for e in rollout.events] == ["refused"]
    assert "signature mismatch" in rollout.events[0].detail
    assert {v.model_version for v in sink.sent} == {"apples:1"}
    assert status["version"] == "apples:1" and status["rollout"]["event"] == "refused"


def test_an_agreeing_candidate_is_shadowed_then_switched_and_kept(plant) -> None:
    staging = make_bundle(plant["tmp"] / "staging", plant["private"], version="2")
    shutil.move(staging, plant["channel"] / "apples-2")  # an atomic rename into the channel
    sink, (rollout, status) = _run(plant, [BRIGHT, DARK, BRIGHT, DARK, BRIGHT, DARK, BRIGHT],
                                   shadow=2)
    assert [e.kind for e in rollout.events] == ["shadowing", "switched", "kept"]
    versions = [v.model_version for v in sink.sent]
    assert versions == ["apples:1"] * 3 + ["apples:2"] * 4  # switched between two items
    assert status["version"] == "apples:2"


def test_a_disagreeing_candidate_is_rejected_in_shadow(plant) -> None:
    make_bundle(plant["channel"] / "apples-2", plant["private"], threshold=1.0, version="2")
    sink, (rollout, _) = _run(plant, [BRIGHT, DARK, DARK, DARK, BRIGHT], shadow=3)
    assert [e.kind for e in rollout.events] == ["shadowing", "rejected"]
    assert {v.model_version for v in sink.sent} == {"apples:1"}


def test_a_disagreement_spike_after_the_switch_rolls_back(plant) -> None:
    make_bundle(plant["channel"] / "apples-2", plant["private"], threshold=1.0, version="2")
    images = [BRIGHT] * 4 + [DARK] * 3 + [DARK]
    sink, (rollout, status) = _run(plant, images, shadow=3)
    assert [e.kind for e in rollout.events] == ["shadowing", "switched", "rolled_back"]
    assert sink.sent[-1].model_version == "apples:1" and status["version"] == "apples:1"
    assert "back to apples:1" in rollout.events[-1].detail


class SlowLoadingChannel:
    """The plant's channel folder, with a fetch that takes `delay_s` (a slow download)."""

    def __init__(self, root: Path, delay_s: float) -> None:
        from visionline.edge._channel import open_channel

        self.channel, self.delay_s = open_channel(root, "L1"), delay_s

    def candidates(self) -> list[Any]:
        from visionline.edge._channel import Candidate

        def slow(fetch):
            time.sleep(self.delay_s)
            return fetch()

        return [Candidate(c.name, c.key, lambda c=c: slow(c.fetch))
                for c in self.channel.candidates()]


def test_a_background_roll_out_never_holds_up_an_item(plant) -> None:
    make_bundle(plant["channel"] / "apples-2", plant["private"], version="2")
    decider = Decider(plant["model"], deadline_ms=5000, line="L1")
    rollout = Rollout(decider, SlowLoadingChannel(plant["channel"].parent, 1.5),
                      pubkey=plant["public"], shadow_items=2, poll_s=0.0, background=True)
    sink = RecordingSink()
    agent = LineAgent(ListSource([BRIGHT, DARK] * 300), decider, Outbox(plant["tmp"] / "o.db"),
                      sink, rollout=rollout)
    stopped = []

    def after(frame: Frame, decision: Any, original=rollout.after_item) -> None:
        original(frame, decision)
        time.sleep(0.01)  # items arrive every 10 ms while the candidate downloads for 1.5 s
        if [e.kind for e in rollout.events][-1:] == ["kept"] and not stopped:
            stopped.append(len(sink.sent))
            agent.stop()

    rollout.after_item = after
    agent.run()
    decider.close()
    assert [e.kind for e in rollout.events] == ["shadowing", "switched", "kept"]
    gaps = np.diff([v.decided_at for v in sink.sent])
    assert gaps.max() < 1.0  # no item waited for the 1.5 s download
    first_new = [v.model_version for v in sink.sent].index("apples:2")
    assert first_new > 10  # the line kept deciding with v1 while v2 was fetched and verified


def _breaks_after_the_switch(shadow: int, failure: str):
    """An `on_load` hook that lets the candidate pass its shadow run, then crash or stall once
    it runs the line (a model that breaks on production frames)."""

    def hook(_name: str, model: Any) -> None:
        original, calls = model.predict_array, []

        def predict_array(batch):
            calls.append(1)
            if len(calls) > shadow:
                if failure == "crash":
                    raise RuntimeError("onnxruntime: kernel failed")
                time.sleep(0.3)
            return original(batch)

        model.predict_array = predict_array

    return hook


@pytest.mark.parametrize(("failure", "detail"), [
    ("crash", "the new model failed on an item"), ("stall", "p95 latency"),
])
def test_a_new_model_that_crashes_or_stalls_is_rolled_back(plant, failure: str, detail: str) -> None:
    make_bundle(plant["channel"] / "apples-2", plant["private"], version="2")
    decider = Decider(plant["model"], deadline_ms=5000, line="L1")
    rollout = Rollout(decider, plant["channel"].parent, pubkey=plant["public"], shadow_items=2,
                      poll_s=0.0, max_latency_ms=150, on_load=_breaks_after_the_switch(2, failure))
    sink = RecordingSink()
    agent = LineAgent(ListSource([BRIGHT, DARK] * 4), decider, Outbox(plant["tmp"] / "o.db"),
                      sink, rollout=rollout)
    agent.run()
    decider.close()
    assert [e.kind for e in rollout.events] == ["shadowing", "switched", "rolled_back"]
    assert detail in rollout.events[-1].detail
    metrics = agent.metrics.render().decode()
    assert 'visionline_edge_rollout_events_total{kind="rolled_back"} 1.0' in metrics
    assert decider.version == "apples:1" and sink.sent[-1].model_version == "apples:1"
    assert len(sink.sent) == 8  # every item got a verdict, the failed ones the fail-safe
