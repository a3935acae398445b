"""The Modbus TCP sink against a real pymodbus server on 127.0.0.1 playing the PLC."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from visionline.edge import Verdict, item_key, open_sink
from visionline.edge._modbus import ModbusSink
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


class ModbusPlc:
    """A pymodbus TCP server with 16 coils and 16 holding registers that records every write the
    way a PLC program would see it: (function code, address, values), in arrival order."""

    def __init__(self, port: int, start_sequence: int = 0) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.writes: list[tuple[int, int, list[int]]] = []
        registers = [start_sequence] + [0] * 15
        device = SimDevice(
            id=0,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=registers, datatype=DataType.REGISTERS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._record,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            self.server = ModbusTcpServer(device, address=("127.0.0.1", port))
            await self.server.serve_forever(background=True)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    async def _record(self, function_code, start_address, address, count, registers, values):
        if values is not None:
            self.writes.append((function_code, address, [int(v) for v in values]))

    def signals(self, coil: int = 0, register: int = 0) -> list[tuple[int, int, int, bool]]:
        """(sequence, item key, flags, reject coil) per register-block write, in order."""
        seen, bit = [], None
        for code, address, values in self.writes:
            if code == 5 and address == coil:
                bit = bool(values[0])
            if code == 16 and address == register:
                seen.append((values[0], values[1] << 16 | values[2], values[3], bit))
        return seen

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def plc():
    port = free_port()
    server = ModbusPlc(port)
    yield server, port
    server.stop()


def test_plc_sees_each_reject_bit_with_its_item_in_order(plc):
    server, port = plc
    sink = open_sink(f"modbus://127.0.0.1:{port}?coil=3&register=4&unit=1&timeout=2")
    items = [("1001", True), ("1002", False), ("apple-7", True), ("1004", False, True)]
    for item in items:
        sink.send(verdict(*item))
    sink.close()
    assert server.signals(coil=3, register=4) == [
        (1, 1001, 1, True),
        (2, 1002, 0, False),
        (3, item_key("apple-7"), 1, True),
        (4, 1004, 2, False),
    ]
    assert item_key("apple-7") != 7


def test_sequence_continues_from_the_plc_after_a_restart():
    port = free_port()
    server = ModbusPlc(port, start_sequence=65534)
    try:
        sink = ModbusSink("127.0.0.1", port, timeout=2)
        for n in range(3):
            sink.send(verdict(str(n), True))
        sink.close()
        assert [s[0] for s in server.signals()] == [65535, 1, 2]
    finally:
        server.stop()


def test_sink_reconnects_after_the_plc_restarts_and_moves_its_sequence_on():
    port = free_port()
    server = ModbusPlc(port)
    sink = ModbusSink("127.0.0.1", port, timeout=1)
    sink.send(verdict("1", True))
    server.stop()
    with pytest.raises(ServiceUnavailableError):
        sink.send(verdict("2", False))
    server = ModbusPlc(port, start_sequence=40)
    try:
        sink.send(verdict("3", False))
        sink.close()
        assert server.signals() == [(41, 3, 0, False)]
    finally:
        server.stop()


def test_unreachable_plc_gives_one_clear_sentence_quickly():
    sink = open_sink(f"modbus://127.0.0.1:{free_port()}?timeout=0.5")
    started = time.monotonic()
    with pytest.raises(
        ServiceUnavailableError,
        match=r"Modbus PLC at 127\.0\.0\.1:\d+ did not "
        r"take the reject signal for item '9'.*check that it is on",
    ):
        sink.send(verdict("9", True))
    assert time.monotonic() - started < 5
    sink.close()


def test_unmapped_registers_name_the_layout(plc):
    _server, port = plc
    sink = open_sink(f"modbus://127.0.0.1:{port}?register=100&timeout=2")
    with pytest.raises(ServiceUnavailableError, match="holding registers 100-103 for unit 1"):
        sink.send(verdict("1", True))
    sink.close()


def test_buffered_sink_delivers_everything_in_order_once_the_plc_is_back():
    port = free_port()
    buffered = BufferedSink(open_sink(f"modbus://127.0.0.1:{port}?timeout=0.3"), retry_interval=0.1)
    for n in range(5):
        buffered.send(verdict(str(n), n % 2 == 0))
    assert buffered.alarm and buffered.backlog == 5
    assert "did not take the reject signal" in buffered.last_error
    server = ModbusPlc(port)
    try:
        assert buffered.flush(timeout=10)
        buffered.send(verdict("5", True))
        assert not buffered.alarm and buffered.backlog == 0 and buffered.delivered == 6
        assert [(s[1], s[3]) for s in server.signals()] == [
            (0, True),
            (1, False),
            (2, True),
            (3, False),
            (4, True),
            (5, True),
        ]
    finally:
        buffered.close()
        server.stop()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("modbus://127.0.0.1:502?coil=x", "coil='x' must be an integer from 0 to 65535"),
        ("modbus://127.0.0.1:502?unit=300", "unit='300' must be an integer from 0 to 255"),
        ("modbus://127.0.0.1:502?relay=1", "unknown option"),
        ("modbus://127.0.0.1:502?timeout=-1", "timeout='-1' must be a number"),
        ("modbus://:502", "names no host"),
    ],
)
def test_bad_urls_are_refused_with_the_fix(url, message):
    with pytest.raises(ConfigError, match=message):
        open_sink(url)
