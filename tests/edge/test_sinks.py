"""open_sink's dispatch and errors, and BufferedSink's ordering, alarm and backlog."""

from __future__ import annotations

import sys
import threading
import time
import zlib

import pytest

from visionline.edge import BufferedSink, Verdict, item_key, open_sink
from visionline.edge._modbus import ModbusSink
from visionline.edge._mqtt import MqttSink
from visionline.edge._opcua import OpcUaSink
from visionline.errors import ConfigError, ServiceUnavailableError, VisionlineError


def verdict(item_id: str) -> Verdict:
    return Verdict(item_id, True, 0.9, "rot", "v1", 1.0, 1.01)


class FlakyPlc:
    """A sink whose peer can be switched off: sends fail while it is down."""

    def __init__(self) -> None:
        self.up = True
        self.received: list[str] = []
        self.closed = False
        self.lock = threading.Lock()

    def send(self, v: Verdict) -> None:
        with self.lock:
            if not self.up:
                raise ServiceUnavailableError(f"The PLC is down for item {v.item_id!r}.")
            self.received.append(v.item_id)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("opcua://plc.local:4840/line?node=ns=2;s=Line1", OpcUaSink),
        ("modbus://10.0.0.5?coil=2", ModbusSink),
        ("mqtt://broker/plant/line1", MqttSink),
    ],
)
def test_open_sink_dispatches_on_the_scheme_without_connecting(url, kind):
    sink = open_sink(url)
    assert isinstance(sink, kind)
    sink.close()


def test_open_sink_fills_default_ports_and_options():
    modbus = open_sink("modbus://10.0.0.5")
    assert (modbus.port, modbus.coil, modbus.register, modbus.unit, modbus.timeout) == (
        502,
        0,
        0,
        1,
        1.0,
    )
    mqtt = open_sink("mqtt://user:secret@broker/plant/line1?qos=0&timeout=0.2")
    assert (mqtt.port, mqtt.topic, mqtt.qos, mqtt.username, mqtt.password, mqtt.timeout) == (
        1883,
        "plant/line1",
        0,
        "user",
        "secret",
        0.2,
    )
    opcua = open_sink("opcua://op:pw@plc:4841/x?node=ns=2;s=L")
    assert opcua.endpoint == "opc.tcp://op:pw@plc:4841/x"
    assert opcua.where == "opc.tcp://plc:4841/x"
    opcua.close()


@pytest.mark.parametrize("url", ["profinet://plc:1234", "plc.local:502", ""])
def test_unknown_scheme_names_the_ones_that_work(url):
    with pytest.raises(
        ConfigError, match=r"unknown scheme .*use one of opcua://, modbus://, mqtt://"
    ):
        open_sink(url)


def test_a_missing_client_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "visionline.edge._mqtt", None)
    monkeypatch.setitem(sys.modules, "paho", None)
    with pytest.raises(ConfigError, match=r"pip install 'visionline\[edge\]'"):
        open_sink("mqtt://broker/line1")


def test_item_key_keeps_plc_counters_and_hashes_other_ids():
    assert item_key("4711") == 4711
    assert item_key("apple-7") == zlib.crc32(b"apple-7")
    assert item_key(str(2**32)) == zlib.crc32(str(2**32).encode())
    assert item_key("٣") == zlib.crc32("٣".encode())


def test_buffered_sink_delivers_at_once_while_the_plc_answers():
    plc = FlakyPlc()
    buffered = BufferedSink(plc)
    for n in range(3):
        buffered.send(verdict(str(n)))
    assert plc.received == ["0", "1", "2"]
    assert (buffered.backlog, buffered.alarm, buffered.delivered) == (0, False, 3)
    buffered.close()
    assert plc.closed


def test_buffered_sink_never_raises_buffers_in_order_and_recovers():
    plc = FlakyPlc()
    buffered = BufferedSink(plc, retry_interval=0.01)
    buffered.send(verdict("0"))
    plc.up = False
    for n in range(1, 6):
        buffered.send(verdict(str(n)))
    assert buffered.alarm and buffered.backlog == 5
    assert buffered.last_error == "The PLC is down for item '1'."
    assert not buffered.flush(timeout=0.05)
    plc.up = True
    assert buffered.flush(timeout=5)
    buffered.send(verdict("6"))
    assert plc.received == ["0", "1", "2", "3", "4", "5", "6"]
    assert (buffered.backlog, buffered.alarm, buffered.delivered, buffered.dropped) == (
        0,
        False,
        7,
        0,
    )
    buffered.close()


def test_a_full_buffer_drops_the_oldest_and_counts_them():
    plc = FlakyPlc()
    plc.up = False
    buffered = BufferedSink(plc, capacity=3, retry_interval=60)
    for n in range(5):
        buffered.send(verdict(str(n)))
    assert (buffered.backlog, buffered.dropped) == (3, 2)
    buffered.send(verdict("5"))
    assert (buffered.backlog, buffered.dropped) == (3, 3)
    plc.up = True
    assert buffered.flush(timeout=0.05) is False
    buffered.close()
    assert plc.received == []


def test_a_closed_buffer_refuses_new_signals():
    buffered = BufferedSink(FlakyPlc())
    buffered.close()
    with pytest.raises(VisionlineError, match="sink is closed"):
        buffered.send(verdict("0"))


def test_a_buffer_needs_room_for_one_signal():
    with pytest.raises(ConfigError, match="capacity 0 must be at least 1"):
        BufferedSink(FlakyPlc(), capacity=0)


class SlowToConnectPlc(FlakyPlc):
    """A PLC that is away at start; every attempt to reach it costs `wait_s` (a connect timeout)."""

    def __init__(self, wait_s: float) -> None:
        super().__init__()
        self.up, self.wait_s, self.attempts = False, wait_s, 0

    def connect(self) -> None:
        self.attempts += 1
        if not self.up:
            raise ServiceUnavailableError("The PLC does not answer.")

    def send(self, v: Verdict) -> None:
        self.attempts += 1
        if not self.up:
            threading.Event().wait(self.wait_s)
        super().send(v)


def test_a_plc_away_at_start_buffers_from_the_first_verdict_on():
    plc = SlowToConnectPlc(wait_s=5.0)
    buffered = BufferedSink(plc, retry_interval=60)
    buffered.connect()
    assert buffered.alarm and buffered.last_error == "The PLC does not answer."
    for n in range(3):
        buffered.send(verdict(str(n)))  # queued at once: no item waits out a connect timeout
    assert plc.attempts == 1 and buffered.backlog == 3
    plc.up = True
    buffered.retry_interval = 0.01
    with buffered._state:
        buffered._state.notify_all()
    assert buffered.flush(timeout=10)
    assert plc.received == ["0", "1", "2"] and not buffered.alarm
    buffered.close()


class StallingPlc(FlakyPlc):
    """A PLC that answers only once `go` is set (a stalled PLC program or network)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def send(self, v: Verdict) -> None:
        self.go.wait(10)
        super().send(v)


def test_in_the_background_a_stalled_plc_never_holds_up_the_line():
    plc = StallingPlc()
    buffered = BufferedSink(plc, background=True)
    for n in range(4):
        buffered.send(verdict(str(n)))  # returns at once: the buffer's thread waits for the PLC
    assert plc.received == [] and buffered.backlog == 4 and not buffered.alarm
    plc.go.set()
    assert buffered.flush(timeout=10)
    assert plc.received == ["0", "1", "2", "3"] and buffered.delivered == 4
    buffered.send(verdict("4"))
    buffered.close()  # delivers what is queued before closing
    assert plc.received[-1] == "4" and plc.closed


def test_in_the_background_a_failing_plc_is_alarmed_and_retried_in_order():
    plc = FlakyPlc()
    plc.up = False
    buffered = BufferedSink(plc, retry_interval=0.01, background=True)
    for n in range(3):
        buffered.send(verdict(str(n)))
    assert not buffered.flush(timeout=0.2) and buffered.alarm
    plc.up = True
    assert buffered.flush(timeout=10)
    assert plc.received == ["0", "1", "2"] and not buffered.alarm
    buffered.close()


def test_a_plc_away_at_start_stays_alarmed_while_nothing_is_queued():
    """With no verdict queued, the retry had cleared the alarm (and logged 'reachable again')
    without reaching the PLC; it must connect first."""
    plc = SlowToConnectPlc(wait_s=0.0)
    buffered = BufferedSink(plc, retry_interval=0.01)
    buffered.connect()
    deadline = time.monotonic() + 5
    while plc.attempts < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert plc.attempts >= 4 and buffered.alarm and buffered.backlog == 0
    plc.up = True
    while buffered.alarm and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not buffered.alarm
    buffered.close()
