"""The OPC UA sink against a real asyncua server on 127.0.0.1 playing the PLC."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from visionline.edge import Verdict, open_sink
from visionline.edge._sinks import BufferedSink
from visionline.errors import ConfigError, ServiceUnavailableError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verdict(item_id: str, reject: bool, fail_safe: bool = False) -> Verdict:
    return Verdict(
        item_id,
        reject,
        0.9 if reject else 0.1,
        "rot" if reject else "good",
        "v1",
        1.0,
        1.01,
        fail_safe,
    )


async def certificate(folder: Path, name: str, use) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and its key (PEM)."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    key, cert = folder / f"{name}.pem", folder / f"{name}.der"
    await setup_self_signed_certificate(
        key, cert, f"urn:visionline:test:{name}", "localhost", [use], {"commonName": name}
    )
    return key, cert


class OpcUaPlc:
    """An asyncua server with the documented Line1 nodes (ItemId String, Reject Boolean,
    Sequence UInt32, FailSafe Boolean); it records the values of every Write request from a client
    in arrival order, as the PLC program sees them."""

    def __init__(self, port: int, start_sequence: int = 0, secure_dir: Path | None = None) -> None:
        self.port = port
        self.secure_dir = secure_dir
        self.writes: list[list[tuple[str, object]]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(start_sequence), self.loop).result(30)

    async def _start(self, start_sequence: int) -> None:
        from asyncua import Server, ua
        from asyncua.common.callback import CallbackType

        self.server = Server()
        await self.server.init()
        self.server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/plc")
        if self.secure_dir is not None:
            key, cert = await certificate(self.secure_dir, "plc", ExtendedKeyUsageOID.SERVER_AUTH)
            await self.server.load_certificate(str(cert))
            await self.server.load_private_key(str(key))
            self.server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        ns = await self.server.register_namespace("urn:test:plc")
        line = await self.server.nodes.objects.add_object(f"ns={ns};s=Line1", "Line1")
        for name, value, kind in [
            ("ItemId", "", ua.VariantType.String),
            ("Reject", False, ua.VariantType.Boolean),
            ("Sequence", start_sequence, ua.VariantType.UInt32),
            ("FailSafe", False, ua.VariantType.Boolean),
        ]:
            node = await line.add_variable(f"ns={ns};s=Line1.{name}", name, value, kind)
            await node.set_writable()
        self.server.subscribe_server_callback(CallbackType.PostWrite, self._record)
        await self.server.start()

    def _record(self, event, _dispatcher) -> None:
        if not event.is_external:
            return
        self.writes.append(
            [(w.NodeId.Identifier, w.Value.Value.Value) for w in event.request_params.NodesToWrite]
        )

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def plc():
    server = OpcUaPlc(free_port(), start_sequence=41)
    yield server
    server.stop()


def test_plc_sees_item_reject_and_sequence_in_one_write_per_item_in_order(plc):
    sink = open_sink(f"opcua://127.0.0.1:{plc.port}/plc?node=ns=2;s=Line1&timeout=3")
    for item_id, reject in [("A-1", True), ("A-2", False), ("A-3", True)]:
        sink.send(verdict(item_id, reject))
    sink.close()
    assert plc.writes[-3:] == [
        [("Line1.ItemId", "A-1"), ("Line1.Reject", True), ("Line1.Sequence", 42)],
        [("Line1.ItemId", "A-2"), ("Line1.Reject", False), ("Line1.Sequence", 43)],
        [("Line1.ItemId", "A-3"), ("Line1.Reject", True), ("Line1.Sequence", 44)],
    ]


def test_nodes_named_one_by_one_with_the_fail_safe_flag(plc):
    nodes = "item=ns=2;s=Line1.ItemId&reject=ns=2;s=Line1.Reject&sequence=ns=2;s=Line1.Sequence"
    sink = open_sink(f"opcua://127.0.0.1:{plc.port}/plc?{nodes}&failsafe=ns=2;s=Line1.FailSafe")
    sink.send(verdict("B-1", True, fail_safe=True))
    sink.close()
    previous = plc.writes[-2][-1][1]
    assert plc.writes[-1] == [
        ("Line1.ItemId", "B-1"),
        ("Line1.Reject", True),
        ("Line1.FailSafe", True),
        ("Line1.Sequence", previous + 1),
    ]


def test_a_missing_node_names_it(plc):
    sink = open_sink(f"opcua://127.0.0.1:{plc.port}/plc?node=ns=2;s=Line9&timeout=3")
    with pytest.raises(
        ServiceUnavailableError, match=r"has the writable nodes ns=2;s=Line9\.ItemId"
    ):
        sink.send(verdict("C-1", True))
    sink.close()


def test_unreachable_plc_gives_one_clear_sentence_quickly():
    sink = open_sink(f"opcua://127.0.0.1:{free_port()}/plc?node=ns=2;s=Line1&timeout=0.5")
    started = time.monotonic()
    with pytest.raises(
        ServiceUnavailableError,
        match=r"OPC UA PLC at opc\.tcp://127\.0\.0\.1:\d+"
        r"/plc did not take the reject signal for item 'D-1'",
    ):
        sink.send(verdict("D-1", True))
    assert time.monotonic() - started < 5
    sink.close()


def test_silent_plc_times_out_instead_of_hanging():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        sink = open_sink(f"opcua://127.0.0.1:{port}?node=ns=2;s=Line1&timeout=0.5")
        with pytest.raises(ServiceUnavailableError, match="no answer in time"):
            sink.send(verdict("E-1", True))
        sink.close()


@pytest.mark.slow
def test_buffered_sink_delivers_everything_in_order_once_the_plc_is_back():
    port = free_port()
    buffered = BufferedSink(
        open_sink(f"opcua://127.0.0.1:{port}/plc?node=ns=2;s=Line1&timeout=0.5"),
        retry_interval=0.1,
    )
    for n in range(4):
        buffered.send(verdict(f"F-{n}", n % 2 == 0))
    assert buffered.alarm and buffered.backlog == 4
    server = OpcUaPlc(port)
    try:
        assert buffered.flush(timeout=20)
        assert not buffered.alarm and buffered.delivered == 4
        assert [(w[0][1], w[1][1], w[2][1]) for w in server.writes] == [
            ("F-0", True, 1),
            ("F-1", False, 2),
            ("F-2", True, 3),
            ("F-3", False, 4),
        ]
    finally:
        buffered.close()
        server.stop()


@pytest.mark.slow
def test_sink_reconnects_after_the_plc_restarts():
    port = free_port()
    server = OpcUaPlc(port)
    sink = open_sink(f"opcua://127.0.0.1:{port}/plc?node=ns=2;s=Line1&timeout=3")
    try:
        sink.send(verdict("H-1", True))
        server.stop()
        with pytest.raises(ServiceUnavailableError):
            sink.send(verdict("H-2", True))
        server = OpcUaPlc(port, start_sequence=7)
        sink.send(verdict("H-3", False))
        assert server.writes == [
            [("Line1.ItemId", "H-3"), ("Line1.Reject", False), ("Line1.Sequence", 8)]
        ]
    finally:
        sink.close()
        server.stop()


def test_signed_and_encrypted_channel_with_the_agents_certificate(tmp_path):
    server = OpcUaPlc(free_port(), secure_dir=tmp_path)
    key, cert = asyncio.run(certificate(tmp_path, "agent", ExtendedKeyUsageOID.CLIENT_AUTH))
    security = f"Basic256Sha256,SignAndEncrypt,{cert},{key}"
    try:
        plain = open_sink(f"opcua://127.0.0.1:{server.port}/plc?node=ns=2;s=Line1&timeout=3")
        with pytest.raises(ServiceUnavailableError):
            plain.send(verdict("G-0", True))
        plain.close()
        sink = open_sink(
            f"opcua://127.0.0.1:{server.port}/plc?node=ns=2;s=Line1&timeout=5&security={security}"
        )
        sink.send(verdict("G-1", True))
        sink.close()
        assert server.writes == [
            [("Line1.ItemId", "G-1"), ("Line1.Reject", True), ("Line1.Sequence", 1)]
        ]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("opcua://127.0.0.1:4840", r"needs the node\(s\) item, reject, sequence"),
        ("opcua://h?node=ns=2;s=L&security=Basic128,Sign,a,b", "must read security=POLICY,MODE"),
        (
            "opcua://h?node=ns=2;s=L&security=Basic256Sha256,Sign,/no/a.der,/no/a.pem",
            "security file '/no/a.der' does not exist",
        ),
        ("opcua://127.0.0.1:4840?node=ns=2;s=L&reject=bogus", "node id 'bogus' for reject"),
    ],
)
def test_bad_urls_are_refused_with_the_fix(url, message):
    with pytest.raises(ConfigError, match=message):
        open_sink(url)


def test_a_file_that_is_no_certificate_is_refused(tmp_path):
    (tmp_path / "agent.der").write_bytes(b"not a certificate")
    (tmp_path / "agent.pem").write_text("key")
    security = f"Basic256Sha256,Sign,{tmp_path / 'agent.der'},{tmp_path / 'agent.pem'}"
    with pytest.raises(ConfigError, match="is not an application certificate with a URI"):
        open_sink(f"opcua://h?node=ns=2;s=L&security={security}")
