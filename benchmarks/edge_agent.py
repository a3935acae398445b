"""Edge line agent: frame arrival → reject signal latency at a sustained item rate, against the
bare bundle inference of the same frames in the same run.

The bundle is the demo's architecture (efficientnet_lite0 with the offline ImageNet trunk and a
six-class head at 128 px, exported to ONNX FP32 and signed; the head is untrained because speed,
not accuracy, is measured). The agent runs its real loop: `synth://` frames at `--rate` items/s,
the verdict on its worker thread within the deadline, the SQLite WAL outbox commit, then the
sink. Two sinks alternate: an in-process stamp, and the real `opcua://` sink (buffered, as
`visionline edge run` opens it) writing to the simulated PLC, an asyncua server in a child
process that stamps each Write it receives (a real PLC is another machine; here it shares the 2
cores). Latency = sink or PLC time − frame capture (the source's due time, so an agent that falls
behind pays for it). A late signal is one the PLC got after the item's deadline. Bare inference times
`Preprocessing` + `EdgeModel.predict_array` on the same frames, batch 1, same ONNX Runtime
threads. Agent and bare runs alternate in `--rounds` short rounds; percentiles pool the rounds,
and the p50 overhead is the median of the per-round differences (a shared machine's load drifts
within minutes, and one long agent phase followed by one bare phase showed it as a negative
overhead). Each deadline miss is listed with its round, the load and any garbage collection
that ran at the time, and the bare loop's own >deadline inferences are counted beside them (the
machine's share of the misses). A sweep of short runs at higher rates then finds the highest rate
whose p99 stays under the deadline (the issue's measure; its misses are reported beside it).
The rounds' verdicts stay in one outbox (no central log during the run: the network is "down");
then `visionline monitor serve` starts and the sync worker's drain of that backlog is timed.
Targets (issue 19): p99 ≤ 50 ms at 20 items/s, p50 overhead over bare ≤ 5 ms, no deadline misses,
a 2-minute backlog drained in ≤ 30 s.
With --outage 120 it runs the issue's outage instead: the agent decides at --rate and syncs
live while `visionline monitor serve` is stopped for 120 s mid-run and started again; the central
log is then checked for lost and duplicated verdicts (edge_agent_outage.json).
Run: .venv/bin/python benchmarks/edge_agent.py [--rate 20] [--seconds 10] [--rounds 12]
                                                [--sweep 25,30,40,50,60] [--nice -10]
     .venv/bin/python benchmarks/edge_agent.py --outage 120
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import uncommitted_code, write_result

from visionline.edge import (
    BufferedSink,
    Decider,
    FailSafe,
    LineAgent,
    Outbox,
    SynthSource,
    Verdict,
    open_sink,
)
from visionline.edge._decide import infer

CLASSES = ["good", "bruise", "rot", "scab", "cut", "insect_hole"]


def build_bundle(tmp: Path, size: int) -> tuple[Path, Path]:
    """A signed bundle of the demo's architecture; (bundle, public key)."""
    from visionline.export import generate_keys
    from visionline.export._bundle import finalize_bundle
    from visionline.export._onnx import export_onnx
    from visionline.preprocessing import Preprocessing
    from visionline.train._backbones import load_pretrained
    from visionline.train._model import ModelSpec, build_model

    private, public = generate_keys(tmp / "keys")
    spec = ModelSpec("efficientnet_lite0", CLASSES, Preprocessing(size=size))
    model = build_model(spec).eval()
    load_pretrained(model.backbone, spec.backbone, "imagenet")
    bundle = tmp / "bundle"
    export_onnx(model, size, bundle / "model.onnx")
    manifest = {
        "name": "apples", "version": "bench", "classes": CLASSES,
        "class_labels": {c: ("good" if c == "good" else "defect") for c in CLASSES},
        "threshold": 0.5, "preprocessing": spec.preprocessing.to_dict(),
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32"}}, "deployed": "fp32",
    }
    finalize_bundle(bundle, manifest, signing_key=private)
    return bundle, public


class StampingSink:
    """The PLC stand-in: records when each verdict arrived."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.fail_safe = 0

    def send(self, verdict: Verdict) -> None:
        self.latencies.append(time.time() - verdict.captured_at)
        self.fail_safe += verdict.fail_safe

    def close(self) -> None:
        pass


def _plc_child(conn: object) -> None:
    from visionline.edge._simulator import SimulatedPlc

    plc = SimulatedPlc().start()
    conn.send(plc.url)  # type: ignore[attr-defined]
    while conn.recv() == "writes":  # type: ignore[attr-defined]
        conn.send({w.item_id: w.received_at for w in plc.received()})  # type: ignore[attr-defined]
    plc.stop()


class ChildPlc:
    """The simulated OPC UA PLC in a process of its own (not on the agent's GIL)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_plc_child, args=(child,), daemon=True)
        self._process.start()
        self.url = self._conn.recv()

    def writes(self) -> dict[str, float]:
        """Item id → when the PLC received its Write."""
        self._conn.send("writes")
        return self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(30)


class GcWatch:
    """Every garbage collection while it is on: (start time, generation, pause in s)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []
        self._start = 0.0
        self.on = False

    def __call__(self, phase: str, info: dict) -> None:
        if not self.on:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((time.time(), info["generation"], time.perf_counter() - self._start))

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for gen in (0, 1, 2):
            p = [d for _, g, d in self.pauses if g == gen]
            out[f"gen{gen}"] = {"count": len(p),
                                "max_ms": round(1000 * max(p), 2) if p else 0.0}
        return out


class Central:
    """`visionline monitor serve` over a SQLite log, as a child process that can be stopped and
    started again on the same port (the plant server going away and coming back)."""

    def __init__(self, db: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.db, self.url, self.process = db, f"http://127.0.0.1:{self.port}", None

    def start(self) -> Central:
        import subprocess
        import sys

        import httpx

        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "visionline"), "monitor", "serve", "--db",
             f"sqlite:///{self.db}", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while True:
            try:
                httpx.get(self.url + "/api/summary", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def item_ids(self) -> list[str]:
        import sqlite3

        with sqlite3.connect(self.db) as conn:
            return [row[0] for row in conn.execute("SELECT request_id FROM predictions")]


def drain(tmp: Path) -> tuple[float, int]:
    """Start the central log, then time the sync worker emptying the outbox; (seconds, records)."""
    from visionline.edge import SyncWorker

    central = Central(tmp / "central.db").start()
    try:
        outbox = Outbox(tmp / "outbox.db")
        backlog = outbox.backlog()[0]
        started = time.perf_counter()
        worker = SyncWorker(tmp / "outbox.db", central.url, batch=200, interval_s=0.5).start()
        while outbox.backlog()[0]:
            time.sleep(0.02)
        seconds = round(time.perf_counter() - started, 2)
        worker.stop()
        return seconds, backlog
    finally:
        central.stop()


def outage(model: object, rate: float, outage_s: float, deadline_ms: float, size: int) -> dict:
    """The line runs at `rate` items/s and syncs live; the central server is stopped for
    `outage_s` seconds mid-run and started again. Counts what the central log holds (lost,
    duplicated), the backlog when the restart began, and how long the sync took to catch up once
    the server answered again (the sync worker's backoff is at most 5 s here)."""
    import collections
    import threading

    from visionline.edge import SyncWorker

    tmp = Path(tempfile.mkdtemp(prefix="edge-outage-"))
    central = Central(tmp / "central.db").start()
    outbox_path = tmp / "outbox.db"
    outbox = Outbox(outbox_path)
    worker = SyncWorker(outbox_path, central.url, batch=200, interval_s=0.5,
                        max_backoff_s=5.0).start()
    sink = StampingSink()
    decider = Decider(model, deadline_ms, FailSafe.reject)
    agent = LineAgent(SynthSource(rate=rate, size=size), decider, outbox, sink)
    line = threading.Thread(target=agent.run, daemon=True)
    line.start()
    time.sleep(10)
    central.stop()
    down = time.perf_counter()
    time.sleep(outage_s)
    peak = outbox.backlog()[0]
    restart = time.perf_counter()
    central.start()
    back = time.perf_counter()  # the server answers again
    while outbox.backlog()[0] > rate:  # caught up: less than a second of verdicts waiting
        time.sleep(0.05)
    catch_up = round(time.perf_counter() - back, 2)
    time.sleep(5)
    agent.stop()
    line.join(30)
    worker.stop(drain_s=60)
    decider.close()
    decided = Outbox(outbox_path).status()["counts"]["verdicts"]
    ids = central.item_ids()
    central.stop()
    counts = collections.Counter(ids)
    return {
        "rate": rate, "outage_s": round(back - down, 1), "verdicts": decided,
        "in_central_log": len(counts), "lost": decided - len(counts),
        "duplicated": sum(1 for n in counts.values() if n > 1),
        "backlog_at_restart": peak, "server_start_s": round(back - restart, 1),
        "catch_up_s": catch_up,
        "deadline_misses": sink.fail_safe,
    }


def run_agent(model: object, args: argparse.Namespace, count: int, start: int, sink: object,
              tmp: Path, watch: GcWatch, rate: float | None = None,
              name: str = "outbox.db") -> list[dict[str, object]]:
    """One agent run of `count` synth items into the shared outbox; its deadline misses, each
    with the load and the collections that overlapped it."""
    decider = Decider(model, args.deadline_ms, FailSafe.reject)
    source = SynthSource(rate=rate or args.rate, count=count, start=start, size=args.size)
    outbox = Outbox(tmp / name)
    agent = LineAgent(source, decider, outbox, sink)
    watch.on = True
    agent.run()
    watch.on = False
    decider.close()
    outbox.close()
    missed = []
    with sqlite3.connect(tmp / name) as conn:
        rows = conn.execute("SELECT payload FROM outbox ORDER BY seq DESC LIMIT ?", (count,))
        records = [json.loads(payload) for (payload,) in rows]
    for record in reversed(records):
        if record["route"] != "fail_safe":
            continue
        begin = record["ts"]
        end = begin + record["latency_ms"] / 1000
        during = [round(1000 * d, 1) for t, _, d in watch.pauses if t >= begin and t - d <= end]
        missed.append({"item": record["request_id"], "reason": record["predicted_class"],
                       "latency_ms": round(record["latency_ms"], 1),
                       "load_1m": round(os.getloadavg()[0], 2), "gc_pauses_ms": during})
    return missed


class CaptureTimes:
    """Passes verdicts on to `sink` and keeps each item's capture time (the PLC child stamps
    only the arrival)."""

    def __init__(self, sink: BufferedSink) -> None:
        self.sink = sink
        self.captured: dict[str, float] = {}

    def connect(self) -> None:
        self.sink.connect()

    def send(self, verdict: Verdict) -> None:
        self.captured[verdict.item_id] = verdict.captured_at
        self.sink.send(verdict)

    def close(self) -> None:
        self.sink.close()


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help=(
        "ONNX Runtime intra-op threads for agent and bare alike (the agent's default is 1)."))
    parser.add_argument("--deadline-ms", type=float, default=50.0)
    parser.add_argument("--nice", type=int, default=0, help=(
        "Run at this niceness, e.g. -10 as deploy/edge's systemd unit runs the agent (needs root)."))
    parser.add_argument("--sweep", default="25,30,40,50,60",
                        help="Higher rates (items/s) tried after the rounds, until one fails.")
    parser.add_argument("--sweep-seconds", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=0.0, help=(
        "Instead of the latency rounds: stop the central server this many seconds mid-run "
        "(the issue's 120) and write edge_agent_outage.json."))
    args = parser.parse_args()
    if uncommitted_code():
        raise SystemExit("Commit first: " + ", ".join(uncommitted_code()))
    if args.nice:
        os.nice(args.nice)
    from visionline_edge import load_bundle

    tmp = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    bundle, public = build_bundle(tmp, args.size)
    model = load_bundle(bundle, public, threads=args.threads, require_signature=True)
    if args.outage > 0:
        run_outage(model, args)
        return
    count = int(args.rate * args.seconds)
    deadline_s = args.deadline_ms / 1000
    watch = GcWatch()
    gc.callbacks.append(watch)
    plc = ChildPlc()
    plc_sink = CaptureTimes(BufferedSink(open_sink(plc.url), background=True))  # as the CLI
    agent_lat: list[float] = []
    plc_lat: list[float] = []
    bare_lat: list[float] = []
    misses: list[dict[str, object]] = []
    late_signals = 0
    plc_missing = 0
    bare_over = 0
    loads: list[float] = []
    round_overheads: list[float] = []
    started = time.perf_counter()
    for r in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        sink = StampingSink()
        stamp = run_agent(model, args, count, r * count, sink, tmp, watch)
        agent_lat += sink.latencies
        misses += [{"round": r, "arm": "stamp", **m} for m in stamp]
        got = run_agent(model, args, count, r * count, plc_sink, tmp, watch)
        misses += [{"round": r, "arm": "opcua", **m} for m in got]
        plc_sink.sink.flush(10)
        received = plc.writes()
        round_plc = [received[i] - t for i, t in plc_sink.captured.items() if i in received]
        plc_sink.captured.clear()
        plc_lat += round_plc
        plc_missing += sum(1 for i in plc_sink.captured if i not in received)
        late_signals += sum(1 for x in round_plc if x > deadline_s)
        bare_round = []
        for frame in SynthSource(rate=1e6, count=count, start=r * count, size=args.size):
            t0 = time.perf_counter()
            infer(model, frame)
            bare_round.append(time.perf_counter() - t0)
        bare_lat += bare_round
        bare_over += sum(1 for x in bare_round if x > deadline_s)
        round_overheads.append(1000 * float(np.median(sink.latencies) - np.median(bare_round)))
    plc_sink.close()
    plc.stop()
    gc_summary = watch.summary()
    by_arm = {arm: sum(1 for m in misses if m["arm"] == arm) for arm in ("stamp", "opcua")}
    sweep = []
    for rate in [float(x) for x in args.sweep.split(",") if x]:
        sink = StampingSink()
        n = int(rate * args.sweep_seconds)
        swept = run_agent(model, args, n, 10**6, sink, tmp, watch, rate=rate, name="sweep.db")
        sweep.append({"rate": rate, "items": n, **pct(sink.latencies),
                      "deadline_misses": len(swept), "load_1m": round(os.getloadavg()[0], 2)})
        if sweep[-1]["p99"] > args.deadline_ms:
            break
    # the measure: the highest rate whose p99 stays under the deadline (misses beside it)
    main_p99 = pct(agent_lat)["p99"]
    ok = ([{"rate": args.rate, "deadline_misses": by_arm["stamp"]}] if main_p99 <= args.deadline_ms
          else []) + [s for s in sweep if s["p99"] <= args.deadline_ms]
    best = max(ok, key=lambda s: s["rate"], default=None)
    highest = best["rate"] if best else None
    drain_s, backlog = drain(tmp)
    agent, bare, to_plc = pct(agent_lat), pct(bare_lat), pct(plc_lat)
    overhead = round(float(np.median(round_overheads)), 2)
    n_miss = len(misses)
    print(f"agent {agent} ms, to the OPC UA PLC {to_plc} ms, bare {bare} ms, p50 overhead "
          f"{overhead} ms, deadline misses {n_miss}/{2 * len(agent_lat)}, late PLC signals "
          f"{late_signals}, bare > deadline {bare_over}, gc {gc_summary}, sweep {sweep}, "
          f"drained {backlog} in {drain_s} s")
    print("deadline misses:", json.dumps(misses))
    result = {
        "benchmark": "edge_agent",
        "config": {**vars(args), "items_per_round": count, "model": "efficientnet_lite0 fp32",
                   "sinks": "in-process timestamp, and opcua:// to the simulated PLC "
                            "(asyncua server in a child process on the same 2 cores)"},
        "agent_ms": agent, "agent_to_plc_ms": to_plc, "bare_inference_ms": bare,
        "p50_overhead_ms": overhead,
        "p50_overhead_per_round_ms": [round(x, 2) for x in round_overheads],
        "deadline_misses": n_miss, "deadline_misses_by_arm": by_arm,
        "deadline_miss_detail": misses,
        "late_plc_signals": late_signals, "bare_inferences_over_deadline": bare_over,
        "items": len(agent_lat), "plc_items": len(plc_lat), "plc_missing": plc_missing,
        "gc_during_agent_runs": gc_summary, "load_1m_per_round": loads,
        "rate_sweep": sweep, "highest_rate_p99_under_deadline": highest,
        "outbox_drain": {"records": backlog, "seconds": drain_s, "batch": 200},
        "targets": {"p99_ms": 50, "p50_overhead_ms": 5, "deadline_misses": 0,
                    "drain_2min_backlog_s": 30},
        "wall_s": round(time.perf_counter() - started, 1),
        "readme": [{
            "benchmark": "edge agent",
            "measure": f"capture→signal at {args.rate:g} items/s, {len(agent_lat)} items",
            "visionline": (f"p50 {agent['p50']} / p99 {agent['p99']} ms (to the OPC UA PLC: "
                           f"p50 {to_plc['p50']} / p99 {to_plc['p99']} ms)"),
            "peer": f"bare inference p50 {bare['p50']} / p99 {bare['p99']} ms",
            "result": (f"{overhead:+} ms at p50 (median of rounds); deadline misses "
                       f"{by_arm['stamp']}/{len(agent_lat)} (with the OPC UA PLC on the same cores "
                       f"{by_arm['opcua']}/{len(plc_lat)}; bare inference over the deadline "
                       f"{bare_over}/{len(bare_lat)})"),
        }, {
            "benchmark": "edge agent",
            "measure": f"highest rate with p99 under the {args.deadline_ms:g} ms deadline",
            "visionline": f"{highest:g} items/s" if highest else "none",
            "peer": "sweep " + ", ".join(f"{s['rate']:g}/s p99 {s['p99']} ms" for s in sweep),
            "result": (f"{best['deadline_misses']} deadline misses at that rate" if best
                       else "missed"),
        }, {
            "benchmark": "edge agent",
            "measure": f"outbox backlog of {backlog} verdicts synced after the network returns",
            "visionline": f"{drain_s} s",
            "peer": "target 30 s",
            "result": f"{30 / max(drain_s, 1e-9):.1f}x inside the target",
        }],
    }
    print(write_result("edge_agent", result))


def run_outage(model: object, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    found = outage(model, args.rate, args.outage, args.deadline_ms, args.size)
    print(found)
    result = {
        "benchmark": "edge_agent_outage",
        "config": {**vars(args), "model": "efficientnet_lite0 fp32",
                   "central": "visionline monitor serve (SQLite), stopped and started again"},
        **found,
        "targets": {"lost": 0, "duplicated": 0, "drain_2min_backlog_s": 30},
        "wall_s": round(time.perf_counter() - started, 1),
        "readme": [{
            "benchmark": "edge agent",
            "measure": (f"central server down {found['outage_s']} s mid-run at {args.rate:g} "
                        f"items/s ({found['verdicts']} verdicts)"),
            "visionline": (f"{found['lost']} lost, {found['duplicated']} duplicated; backlog of "
                           f"{found['backlog_at_restart']} caught up {found['catch_up_s']} s after "
                           "the server answered again"),
            "peer": "target: 0 lost, 0 duplicated, ≤ 30 s",
            "result": ("met" if found["lost"] == 0 and found["duplicated"] == 0
                       and found["catch_up_s"] <= 30 else "missed"),
        }],
    }
    print(write_result("edge_agent_outage", result))


if __name__ == "__main__":
    main()
