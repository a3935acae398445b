"""`visionline edge run|status`: the line agent on the line computer, and what it has done."""

from __future__ import annotations

import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from visionline.cli._common import console
from visionline.cli._trust import PubkeyOption, TrustStoreOption
from visionline.edge._decide import FailSafe
from visionline.errors import ConfigError

app = typer.Typer(help="The line agent: camera → verdict → reject signal, offline-first.",
                  no_args_is_help=True)

OutboxOption = Annotated[
    Path, typer.Option("--outbox", help="The agent's local SQLite outbox (WAL).")
]
DEFAULT_OUTBOX = Path(".visionline/edge/outbox.db")


def _sink(url: str | None) -> Any:
    """The PLC/MQTT sink for `url`, buffered so a PLC that is down never stops the line (None:
    verdicts go to the outbox only)."""
    if url is None:
        return None
    from visionline.edge import BufferedSink, open_sink

    return BufferedSink(open_sink(url))


@app.command("run")
def run_command(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Signed bundle folder or .tar.gz.")],
    source: Annotated[str, typer.Option(
        "--source", help="Camera folder, video file, rtsp://..., or synth://?rate=20&drift=lighting."
    )],
    plc: Annotated[str | None, typer.Option(
        "--plc", help="Reject signal sink: opcua://, modbus://, mqtt:// (leave out to only log)."
    )] = None,
    trust_store: TrustStoreOption = None,
    pubkey: PubkeyOption = None,
    deadline_ms: Annotated[float, typer.Option(
        "--deadline-ms", help="Time from capture to ejector; later verdicts take the fail-safe."
    )] = 100.0,
    fail_safe: Annotated[FailSafe, typer.Option(
        "--fail-safe", help="What a missed or undecidable item gets."
    )] = FailSafe.reject,
    outbox: OutboxOption = DEFAULT_OUTBOX,
    central: Annotated[str | None, typer.Option(
        "--central", help="Base URL of 'visionline monitor serve' that the outbox syncs to."
    )] = None,
    line: Annotated[str | None, typer.Option("--line", help="Line name in the log.")] = None,
    sync_batch: Annotated[int, typer.Option("--sync-batch", min=1, max=5000)] = 200,
    sync_interval: Annotated[float, typer.Option("--sync-interval", min=0.01)] = 0.5,
    max_backoff: Annotated[float, typer.Option(
        "--max-backoff", min=0.1, help="Longest wait between sync retries while offline, seconds."
    )] = 30.0,
    drain: Annotated[float, typer.Option(
        "--drain", min=0.0, help="On exit, keep syncing the backlog for up to this many seconds."
    )] = 5.0,
    image_quota_mb: Annotated[float, typer.Option(
        "--image-quota-mb", help="Disk for images of flagged and sampled items (oldest go first)."
    )] = 500.0,
    sample_every: Annotated[int, typer.Option(
        "--sample-every", help="Also keep every Nth item's image (0: flagged only)."
    )] = 100,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Serve Prometheus metrics on this port."
    )] = None,
    channel: Annotated[Path | None, typer.Option(
        "--channel", help="Fleet channel folder watched for new bundles (verify, shadow, switch)."
    )] = None,
    shadow_items: Annotated[int, typer.Option(
        "--shadow-items", min=1, help="Items a candidate runs in shadow, and the old model after."
    )] = 50,
    min_agreement: Annotated[float, typer.Option(
        "--min-agreement", min=0.0, max=1.0, help="Verdict agreement a candidate must reach."
    )] = 0.95,
    camera_timeout: Annotated[float | None, typer.Option(
        "--camera-timeout", min=0.1, help="Alarm (log + metric) when no frame came for this long, s."
    )] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", help="Stop after N items.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="ONNX Runtime threads.")] = None,
) -> None:
    """Run the line: frames in, verdicts within the deadline, reject signals out, verdicts synced."""
    from visionline.edge import (
        Decider,
        ImageStore,
        LineAgent,
        Outbox,
        Rollout,
        SyncWorker,
        open_source,
    )
    from visionline.edge._agent import describe, image_folder

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("visionline.edge").setLevel(logging.INFO)
    if deadline_ms <= 0:
        raise ConfigError("--deadline-ms must be positive; pass the time to the ejector in ms.")
    if trust_store is None and pubkey is None:
        raise ConfigError(
            "The line agent runs only signed bundles; pass --trust-store DIR or --pubkey KEY.pub."
        )
    if channel is not None and not channel.is_dir():
        raise ConfigError(f"No channel folder {channel}; create it or fix --channel.")
    if central is not None and not central.startswith(("http://", "https://")):
        raise ConfigError(
            f"--central {central!r} is not an HTTP URL; pass the monitor's base URL, e.g. "
            "http://plant-server:8050."
        )
    store = Outbox(outbox)
    model = _load_running_bundle(store, bundle, channel, pubkey, trust_store, threads)
    sink = _sink(plc)
    frames = open_source(source)
    decider = Decider(model, deadline_ms, fail_safe, line=line)
    images = ImageStore(image_folder(outbox), int(image_quota_mb * 1024 * 1024))
    rollout = None
    if channel is not None:
        rollout = Rollout(decider, channel, pubkey=pubkey, trust_store=trust_store,
                          shadow_items=shadow_items, min_agreement=min_agreement, threads=threads,
                          active_path=model.root)
    agent = LineAgent(frames, decider, store, sink, images, sample_every, rollout=rollout,
                      camera_timeout_s=camera_timeout)
    if metrics_port is not None:
        try:
            agent.metrics.serve(metrics_port)
        except OSError as exc:
            frames.close()
            raise ConfigError(
                f"Cannot serve metrics on port {metrics_port} ({exc.strerror}); pick a free "
                "--metrics-port."
            ) from exc

    worker = None
    if central:
        worker = SyncWorker(outbox, central, sync_batch, sync_interval,
                            max_backoff_s=max_backoff).start()
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    console.print(
        f"Line agent: {decider.version} ({model.precision}, signed by {model.signed_by}), "
        f"source {source}, deadline {deadline_ms:g} ms, fail-safe {fail_safe.value}."
    )
    try:
        stats = agent.run(max_items)
    except KeyboardInterrupt:
        stats = agent.stats
    finally:
        frames.close()
        decider.close()
        if worker is not None:
            worker.stop(drain_s=drain)
        if sink is not None:
            sink.close()
    console.print_json(json.dumps({**describe(stats), **_status(Outbox(outbox))}))


def _load_running_bundle(store: Any, bundle: Path, channel: Path | None, pubkey: Path | None,
                         trust_store: Path | None, threads: int | None) -> Any:
    """`--bundle`, or with a channel the bundle a roll-out switched to before a restart (verified
    again; if it no longer verifies, `--bundle`)."""
    import logging

    from visionline.errors import VisionlineError
    from visionline_edge import load_bundle

    active = store.get_meta("active_bundle") if channel is not None else None
    if active and Path(active).exists() and Path(active).resolve() != bundle.resolve():
        try:
            return load_bundle(active, pubkey, threads=threads, trust_store=trust_store,
                               require_signature=True)
        except VisionlineError as exc:
            logging.getLogger("visionline.edge").error(
                "the rolled-out bundle %s no longer verifies (%s); running --bundle", active, exc
            )
    return load_bundle(bundle, pubkey, threads=threads, trust_store=trust_store,
                       require_signature=True)


def _status(store: Any) -> dict[str, Any]:
    status = store.status()
    store.close()
    return status


def _when(ts: float | None) -> str:
    return "never" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("status")
def status_command(
    outbox: OutboxOption = DEFAULT_OUTBOX,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backlog, last sync, model version and counts of the agent that writes OUTBOX."""
    from visionline.edge import Outbox
    from visionline.errors import NotFoundError

    if not outbox.is_file():
        raise NotFoundError(f"No outbox at {outbox}; pass the --outbox of 'visionline edge run'.")
    status = _status(Outbox(outbox))
    if as_json:
        console.print_json(json.dumps(status))
        return
    console.print(f"model version  {status['version'] or '-'}   line {status['line'] or '-'}")
    console.print(f"backlog        {status['backlog']} (oldest {_when(status['oldest_pending'])})")
    console.print(f"last sync      {_when(status['last_sync'])}")
    if status["rollout"]:
        r = status["rollout"]
        console.print(f"last roll-out  {r['event']} {r['version']} at {_when(r['ts'])} {r['detail']}")
    for key, value in sorted(status["counts"].items()):
        console.print(f"{key:<14} {value}")
