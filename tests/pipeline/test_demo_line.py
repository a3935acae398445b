"""The demo's line through the line agent, with tiny signed bundles: every apple reaches the PLC
(a real OPC UA server) in camera order, every verdict reaches the central log through the sync
(with its delivery and, for ejected apples, its image), and a bundle published on the channel is
verified, shadowed and switched in under its registry version."""

from __future__ import annotations

import hashlib
from pathlib import Path

from edge_support import make_bundle, png

from visionline.config import Project
from visionline.config._load import init_project
from visionline.pipeline._demo_line import AgentLine


def test_the_line_agent_feeds_the_plc_and_the_central_log_and_rolls_out(tmp_path: Path) -> None:
    from visionline.export import generate_keys
    from visionline.monitor import MonitorDB

    init_project(tmp_path, "apples")
    project = Project.load(tmp_path)
    private, public = generate_keys(tmp_path / "keys")
    v1 = make_bundle(tmp_path / "repo" / "apples" / "1", private, version="20260101.1")
    v2 = make_bundle(tmp_path / "repo" / "apples" / "2", private, version="20260101.2")
    line_dir = tmp_path / "line"
    rows = []
    for i in range(24):
        dark = i % 4 == 0
        name = f"images/D{1 + i // 12:04d}/{i:06d}.png"
        (line_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (line_dir / name).write_bytes(png((10, 10, 10) if dark else (200 + i, 220, 220)))
        rows.append({"file": name, "delivery": f"D{1 + i // 12:04d}", "supplier": "S1",
                     "label": "defect" if dark else "good", "subtype": "rot" if dark else "",
                     "index": str(i)})

    with AgentLine(project, v1, public, line_dir, shadow_items=3, deadline_ms=2000) as line:
        first = line.stream(rows[:12])
        published = line.publish(v2)
        after = line.stream(rows[12:])
        writes = line.plc.received()

    assert [w.item_id for w in writes] == [f"{i:06d}" for i in range(24)]
    assert [w.reject for w in writes] == [i % 4 == 0 for i in range(24)]
    assert first["ejected"] == [{"delivery": "D0001", "signals": 12, "ejected": 3}]
    assert first["sync"]["backlog"] == 0 and after["sync"]["counts"]["synced"] == 24
    assert published.name == "apples-2"
    assert [e["event"] for e in after["rollout"]] == ["shadowing", "switched", "kept"]
    versions = [r.version for r in after["records"]]
    # the first apple's verdict triggers the poll, v2 shadows the next 3, then runs the line
    assert versions == ["1"] * 4 + ["2"] * 8
    assert {r.version for r in first["records"]} == {"1"}
    assert [r.extra["parameters"]["delivery"] for r in after["records"]] == ["D0002"] * 12

    logged = MonitorDB(project.monitor_db_url).frame().set_index("request_id")
    assert len(logged) == 24 and set(logged["supplier_id"]) == {"S1"}
    ejected = logged[logged["flagged"]]
    assert len(ejected) == 6 and ejected["image_sha256"].notna().all()
    dark = hashlib.sha256((line_dir / rows[0]["file"]).read_bytes()).hexdigest()
    assert logged.at["000000", "image_sha256"] == dark and line.truth[dark] == ("defect", "rot")
