"""A simulated PLC: an asyncua OPC UA server on 127.0.0.1 with the sink's documented Line nodes.

The demo and the benchmark use it where a plant has its PLC: the agent's `opcua://` sink writes
ItemId, Reject and Sequence to it in one Write request per item, and the simulator records every
write as the PLC program would see it (item id, reject bit, arrival time), so what the ejector did
per item and when can be counted.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

__all__ = ["PlcWrite", "SimulatedPlc"]


@dataclass(frozen=True)
class PlcWrite:
    """One verdict as the PLC received it."""

    item_id: str
    reject: bool
    sequence: int
    received_at: float


class SimulatedPlc:
    """An OPC UA server with `ns=2;s=<line>.ItemId|Reject|Sequence|FailSafe` and the camera
    trigger counter `<line>.Trigger`, in its own thread."""

    def __init__(self, line: str = "Line1", port: int | None = None) -> None:
        self.line = line
        self.port = port or _free_port()
        self.writes: list[PlcWrite] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="plc-sim", daemon=True)
        self._server = None

    @property
    def url(self) -> str:
        """The agent's `--plc` URL for this PLC."""
        return f"opcua://127.0.0.1:{self.port}/plc?node=ns=2;s={self.line}&timeout=3"

    def start(self) -> SimulatedPlc:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        return self

    async def _start(self) -> None:
        from asyncua import Server, ua
        from asyncua.common.callback import CallbackType

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/plc")
        ns = await server.register_namespace("urn:visionline:simulated-plc")
        line = await server.nodes.objects.add_object(f"ns={ns};s={self.line}", self.line)
        for name, value, kind in [
            ("ItemId", "", ua.VariantType.String),
            ("Reject", False, ua.VariantType.Boolean),
            ("Sequence", 0, ua.VariantType.UInt32),
            ("FailSafe", False, ua.VariantType.Boolean),
            ("Trigger", 0, ua.VariantType.UInt32),
        ]:
            node = await line.add_variable(f"ns={ns};s={self.line}.{name}", name, value, kind)
            await node.set_writable()
            if name == "Trigger":
                self._trigger = node
        server.subscribe_server_callback(CallbackType.PostWrite, self._record)
        await server.start()
        self._server = server

    def _record(self, event: object, _dispatcher: object) -> None:
        if not getattr(event, "is_external", False):
            return
        values = {
            str(w.NodeId.Identifier).rsplit(".", 1)[-1]: w.Value.Value.Value
            for w in event.request_params.NodesToWrite  # type: ignore[attr-defined]
        }
        if "ItemId" in values and "Reject" in values:
            with self._lock:
                self.writes.append(PlcWrite(str(values["ItemId"]), bool(values["Reject"]),
                                            int(values.get("Sequence", 0)), time.time()))

    def fire(self, count: int) -> None:
        """Set the trigger counter, as the PLC does when it fires the camera for item `count`
        (the agent's `--item-tag` reads it as the item id)."""
        from asyncua import ua

        asyncio.run_coroutine_threadsafe(
            self._trigger.write_value(ua.Variant(count, ua.VariantType.UInt32)), self._loop
        ).result(10)

    @property
    def trigger_url(self) -> str:
        """The agent's `--item-tag` URL for the trigger counter."""
        return f"opcua://127.0.0.1:{self.port}/plc?node=ns=2;s={self.line}.Trigger&timeout=3"

    def received(self) -> list[PlcWrite]:
        """Every verdict written so far, in arrival order."""
        with self._lock:
            return list(self.writes)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
