"""The MQTT sink against a real Mosquitto broker on 127.0.0.1 (Debian package `mosquitto`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from visionline.edge import Verdict, open_sink
from visionline.edge._sinks import BufferedSink
from visionline.errors import ConfigError, ServiceUnavailableError

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verdict(item_id: str, reject: bool) -> Verdict:
    return Verdict(
        item_id,
        reject,
        0.9 if reject else 0.1,
        "rot" if reject else "good",
        "v2",
        10.0,
        10.02,
        False,
        "",
    )


class Broker:
    """Mosquitto listening on 127.0.0.1 only, started from its own config file."""

    def __init__(self, tmp: Path, port: int, tls: str = "") -> None:
        if not Path(MOSQUITTO).exists():
            pytest.skip("mosquitto is not installed: apt-get install mosquitto (.ci/run does)")
        self.port = port
        config = tmp / f"mosquitto-{port}.conf"
        # Started as root, Mosquitto would switch to its own user, which cannot read tmp_path.
        user = "user root\n" if os.geteuid() == 0 else ""
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}{tls}"
        )
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}")
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.process.stderr.close()


def tls_files(folder: Path) -> tuple[Path, str]:
    """A CA and a broker certificate for 127.0.0.1 signed by it; returns the CA file and the
    Mosquitto config lines that use them."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, broker_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test ca"))
        .issuer_name(name("test ca"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    broker = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(broker_key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "broker.pem").write_bytes(broker.public_bytes(pem))
    (folder / "broker.key").write_bytes(
        broker_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    config = "".join(
        f"{key} {folder / file}\n"
        for key, file in [
            ("cafile", "ca.pem"),
            ("certfile", "broker.pem"),
            ("keyfile", "broker.key"),
        ]
    )
    return folder / "ca.pem", config


class Subscriber:
    """A paho client subscribed to one topic, collecting the decoded JSON payloads."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self.qos: list[int] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _client, _userdata, message) -> None:
        self.messages.append(json.loads(message.payload))
        self.qos.append(message.qos)

    def wait_for(self, count: int) -> list[dict]:
        end = time.monotonic() + 10
        while len(self.messages) < count and time.monotonic() < end:
            time.sleep(0.02)
        return self.messages

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    server = Broker(tmp_path, free_port())
    yield server
    server.stop()


def test_each_verdict_arrives_as_json_with_qos1_in_order(broker):
    subscriber = Subscriber(broker.port, "plant/line1/verdicts")
    sink = open_sink(f"mqtt://127.0.0.1:{broker.port}/plant/line1/verdicts?client_id=line1")
    for item_id, reject in [("a1", True), ("a2", False), ("a3", True)]:
        sink.send(verdict(item_id, reject))
    sink.close()
    messages = subscriber.wait_for(3)
    subscriber.stop()
    assert [(m["item_id"], m["reject"]) for m in messages] == [
        ("a1", True),
        ("a2", False),
        ("a3", True),
    ]
    assert messages[0] == {
        "item_id": "a1",
        "reject": True,
        "score": 0.9,
        "label": "rot",
        "model_version": "v2",
        "captured_at": 10.0,
        "decided_at": 10.02,
        "fail_safe": False,
        "reason": "",
    }
    assert subscriber.qos == [1, 1, 1]


def test_unreachable_broker_gives_one_clear_sentence_quickly():
    sink = open_sink(f"mqtt://127.0.0.1:{free_port()}/line1?timeout=0.5")
    started = time.monotonic()
    with pytest.raises(
        ServiceUnavailableError,
        match=r"MQTT broker at 127\.0\.0\.1:\d+ did not "
        r"take the verdict for item 'b1' on 'line1'",
    ):
        sink.send(verdict("b1", True))
    assert time.monotonic() - started < 5
    sink.close()


def test_buffered_sink_delivers_in_order_after_a_broker_restart(tmp_path):
    port = free_port()
    broker = Broker(tmp_path, port)
    buffered = BufferedSink(
        open_sink(f"mqtt://127.0.0.1:{port}/line2?timeout=0.5"), retry_interval=0.1
    )
    try:
        buffered.send(verdict("c0", True))
        assert buffered.delivered == 1
        broker.stop()
        for n in range(1, 4):
            buffered.send(verdict(f"c{n}", n % 2 == 0))
        assert buffered.alarm and buffered.backlog == 3
        broker = Broker(tmp_path, port)
        subscriber = Subscriber(port, "line2")
        assert buffered.flush(timeout=10)
        messages = subscriber.wait_for(3)
        subscriber.stop()
        assert [m["item_id"] for m in messages] == ["c1", "c2", "c3"]
        assert not buffered.alarm and buffered.delivered == 4
    finally:
        buffered.close()
        broker.stop()


def test_mqtts_publishes_over_tls_to_a_broker_the_ca_vouches_for(tmp_path):
    ca, config = tls_files(tmp_path)
    broker = Broker(tmp_path, free_port(), tls=config)
    try:
        untrusted = open_sink(f"mqtts://127.0.0.1:{broker.port}/line3?timeout=2")
        with pytest.raises(ServiceUnavailableError, match="certificate verify failed"):
            untrusted.send(verdict("d0", True))
        untrusted.close()
        sink = open_sink(f"mqtts://127.0.0.1:{broker.port}/line3?ca={ca}&timeout=2")
        sink.send(verdict("d1", True))
        sink.close()
        assert sink.tls == {"ca": str(ca)}
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mqtt://127.0.0.1:1883", "topic '' cannot take a publish"),
        ("mqtts://127.0.0.1/line?ca=/no/ca.pem", "TLS file '/no/ca.pem' does not exist"),
        ("mqtts://127.0.0.1/line?cert=/no/c.pem", "needs both cert=FILE and key=FILE"),
        ("mqtt://127.0.0.1/line?ca=/no/ca.pem", "unknown option"),
        ("mqtt://127.0.0.1:1883/line/#", "without wildcards"),
        ("mqtt://127.0.0.1:1883/line?qos=3", "qos='3' must be an integer from 0 to 2"),
    ],
)
def test_bad_urls_are_refused_with_the_fix(url, message):
    with pytest.raises(ConfigError, match=message):
        open_sink(url)
