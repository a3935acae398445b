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
from visionline.edge._config import DEFAULT_OUTBOX
from visionline.edge._decide import FailSafe
from visionline.errors import ConfigError

app = typer.Typer(help="The line agent: camera → verdict → reject signal, offline-first.",
                  no_args_is_help=True)

OutboxOption = Annotated[
    Path, typer.Option("--outbox", help="The agent's local SQLite outbox (WAL).")
]


def _sink(url: str | None) -> Any:
    """The PLC/MQTT sink for `url`, buffered so a PLC that is down or slow never holds up the
    line: its own thread writes the signals in order (None: verdicts go to the outbox only)."""
    if url is None:
        return None
    from visionline.edge import BufferedSink, open_sink

    return BufferedSink(open_sink(url), background=True)


@app.command("run")
def run_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="edge.yaml: every option below as a key (deadline_ms: 80); options "
        "given here win over the file."
    )] = None,
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", "-b", help="Signed bundle folder or .tar.gz.")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Camera folder, video file, rtsp://..., genicam:///PATH/producer.cti"
        "?serial=N (a GenICam camera), or synth://?rate=20&drift=lighting."
    )] = None,
    plc: Annotated[str | None, typer.Option(
        "--plc", help="Reject signal sink: opcua://, modbus://, mqtt:// (leave out to only log)."
    )] = None,
    item_tag: Annotated[str | None, typer.Option(
        "--item-tag", help="Name each frame by the PLC's trigger counter when it arrives: "
        "opcua://HOST:PORT?node=ns=2;s=Line1.Trigger (default: the source's own ids)."
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
    sync_batch: Annotated[
        int, typer.Option("--sync-batch", min=1, max=5000, help="Verdicts per upload to --central.")
    ] = 200,
    sync_interval: Annotated[
        float,
        typer.Option(
            "--sync-interval",
            min=0.01,
            help="Seconds between uploads once the backlog is sent; retries back off from it.",
        ),
    ] = 0.5,
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
    upload_images: Annotated[bool, typer.Option(
        "--upload-images", help="Send kept images with their verdicts to the central log."
    )] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Serve Prometheus metrics on this port."
    )] = None,
    channel: Annotated[str | None, typer.Option(
        "--channel", help="Fleet channel: a folder, s3://BUCKET/PREFIX or the central server's "
        "http(s)://HOST:PORT, watched for new bundles (verify, shadow, switch)."
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
    views: Annotated[int, typer.Option(
        "--views", min=1, max=64, help="Frames per item (multi-view): the most defective decides."
    )] = 1,
    view_separator: Annotated[str, typer.Option(
        "--view-separator", help="Item id = frame id up to the last separator (apple7_top)."
    )] = "_",
    max_items: Annotated[int | None, typer.Option("--max-items", help="Stop after N items.")] = None,
    threads: Annotated[int, typer.Option(
        "--threads", min=1, help="ONNX Runtime intra-op threads. 1 keeps a core for the loop, the "
        "sync and the PLC; 2 on a busy 2-core box doubled the median inference time."
    )] = 1,
) -> None:
    """Run the line: frames in, verdicts within the deadline, reject signals out, verdicts synced."""
    from visionline.edge._config import load_edge_config, validate_edge_config

    given = {
        name: value for name, value in ctx.params.items()
        if name != "config" and ctx.get_parameter_source(name).name != "DEFAULT"
    }
    if config is not None:
        settings = load_edge_config(config, given)
    else:
        if "source" not in given:
            raise ConfigError("Pass --source (a camera folder, video, rtsp:// or synth://) or "
                              "--config edge.yaml.")
        settings = validate_edge_config(given, "visionline edge run")
    _run(settings)


def _run(s: Any) -> None:
    """The agent for validated settings `s` (an `EdgeConfig`)."""
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
    from visionline.edge._channel import open_channel

    channel = None
    if s.channel:  # fetched bundles stay beside the outbox, so a restart finds the running one
        channel = open_channel(s.channel, s.line, s.outbox.parent / "channel-cache")
    store = Outbox(s.outbox)
    model = _load_running_bundle(store, s.bundle, channel, s.pubkey, s.trust_store, s.threads)
    sink = _sink(s.plc)
    frames = open_source(s.source)
    if s.item_tag:
        from visionline.edge._trigger import TaggedSource, open_item_tag

        frames = TaggedSource(frames, open_item_tag(s.item_tag))
    decider = Decider(model, s.deadline_ms, s.fail_safe, line=s.line)
    images = ImageStore(image_folder(s.outbox), int(s.image_quota_mb * 1024 * 1024))
    rollout = None
    if channel is not None:
        rollout = Rollout(decider, channel, pubkey=s.pubkey, trust_store=s.trust_store,
                          shadow_items=s.shadow_items, min_agreement=s.min_agreement,
                          threads=s.threads, active_path=model.root, background=True)
    agent = LineAgent(frames, decider, store, sink, images, s.sample_every, rollout=rollout,
                      camera_timeout_s=s.camera_timeout, upload_images=s.upload_images,
                      views=s.views, view_separator=s.view_separator)
    if s.metrics_port is not None:
        try:
            agent.metrics.serve(s.metrics_port)
        except OSError as exc:
            frames.close()
            raise ConfigError(
                f"Cannot serve metrics on port {s.metrics_port} ({exc.strerror}); pick a free "
                "--metrics-port."
            ) from exc

    worker = None
    if s.central:
        worker = SyncWorker(s.outbox, s.central, s.sync_batch, s.sync_interval,
                            max_backoff_s=s.max_backoff).start()
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    console.print(
        f"Line agent: {decider.version} ({model.precision}, signed by {model.signed_by}), "
        f"source {s.source}, deadline {s.deadline_ms:g} ms, fail-safe {s.fail_safe.value}."
    )
    try:
        stats = agent.run(s.max_items)
    except KeyboardInterrupt:
        stats = agent.stats
    finally:
        frames.close()
        decider.close()
        if worker is not None:
            worker.stop(drain_s=s.drain)
        if sink is not None:
            sink.close()
    console.print_json(json.dumps({**describe(stats), **_status(Outbox(s.outbox))}))


def _load_running_bundle(store: Any, bundle: Path | None, channel: Any, pubkey: Path | None,
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
