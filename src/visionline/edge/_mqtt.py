"""Verdicts published to an MQTT broker (paho-mqtt), for line displays, MES and historians.

URL ``mqtt://[user:pass@]HOST:PORT/TOPIC?qos=1&client_id=ID`` (``mqtts://`` for TLS, port 8883 by
default, trusting the system's CAs or ``ca=FILE``, with ``cert=FILE&key=FILE`` for a client
certificate): each verdict is one JSON object
(the fields of :class:`~visionline.edge.Verdict`) on ``TOPIC``, published with QoS 1 by default
and confirmed by the broker (PUBACK) before ``send`` returns. QoS 1 is at-least-once: after a
lost acknowledgement the buffer may send a verdict again, so consumers key on ``item_id``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from visionline.edge._sinks import _UrlParts
from visionline.edge._types import Verdict
from visionline.errors import ConfigError, ServiceUnavailableError

__all__ = ["MqttSink", "verdict_payload"]


def verdict_payload(verdict: Verdict) -> bytes:
    """The JSON bytes published for one verdict."""
    return json.dumps(dataclasses.asdict(verdict), separators=(",", ":")).encode()


class MqttSink:
    """Publishes each verdict and waits for the broker's acknowledgement; reconnects after a
    failure."""

    def __init__(
        self,
        host: str,
        topic: str,
        port: int = 1883,
        qos: int = 1,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 1.0,
        tls: dict[str, str] | None = None,
    ) -> None:
        if not topic or "+" in topic or "#" in topic:
            raise ConfigError(
                f"The MQTT topic {topic!r} cannot take a publish: name one topic without "
                "wildcards, e.g. mqtt://broker:1883/plant/line1/verdicts."
            )
        self.host, self.port, self.topic = host, port, topic
        self.qos, self.client_id = qos, client_id
        self.username, self.password = username, password
        self.timeout = timeout
        self.tls = tls
        for name in (tls or {}).values():
            if not Path(name).is_file():
                raise ConfigError(f"The MQTT TLS file {name!r} does not exist: fix the path.")
        self._client = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MqttSink:
        secure = url.lower().startswith("mqtts:")
        tls_options = {"ca", "cert", "key"} if secure else set()
        parts = _UrlParts(url, 8883 if secure else 1883, {"qos", "client_id", *tls_options})
        tls = {name: parts.options[name] for name in sorted(tls_options) if name in parts.options}
        if ("cert" in tls) != ("key" in tls):
            raise ConfigError("An MQTT client certificate needs both cert=FILE and key=FILE.")
        topic = parts.path.lstrip("/") + ("#" if "#" in url else "")
        return cls(
            parts.host,
            topic,
            port=parts.port,
            qos=parts.integer("qos", 1, 0, 2),
            client_id=parts.options.get("client_id", ""),
            username=parts.username,
            password=parts.password,
            timeout=parts.timeout,
            tls=tls if secure else None,
        )

    def send(self, verdict: Verdict) -> None:
        """Publish the verdict; raise a one-sentence error after about ``timeout`` seconds."""
        with self._lock:
            try:
                client = self._connected()
                info = client.publish(self.topic, verdict_payload(verdict), qos=self.qos)
                info.wait_for_publish(self.timeout)
                if not info.is_published():
                    raise TimeoutError("no acknowledgement in time")
            except (OSError, RuntimeError, ValueError) as exc:
                self._drop()
                raise ServiceUnavailableError(
                    f"The MQTT broker at {self.host}:{self.port} did not take the verdict for "
                    f"item {verdict.item_id!r} on {self.topic!r} ({_describe(exc)}): check that "
                    "it is running, reachable and lets this client publish there."
                ) from exc

    def connect(self) -> None:
        """Connect now (before the first item); a one-sentence error when the broker is away."""
        with self._lock:
            try:
                self._connected()
            except (OSError, RuntimeError, ValueError) as exc:
                self._drop()
                raise ServiceUnavailableError(
                    f"The MQTT broker at {self.host}:{self.port} does not answer "
                    f"({_describe(exc)}): check that it is running and reachable."
                ) from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connected(self) -> mqtt.Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        self._drop()
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(_client, _userdata, _flags, reason, _properties) -> None:
            if reason.is_failure:
                refused.append(str(reason))
            connected.set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.connect_timeout = self.timeout
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls is not None:
            client.tls_set(
                ca_certs=self.tls.get("ca"),
                certfile=self.tls.get("cert"),
                keyfile=self.tls.get("key"),
            )
        client.on_connect = on_connect
        self._client = client
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        if not connected.wait(self.timeout):
            raise TimeoutError("no CONNACK in time")
        if refused:
            raise ConnectionRefusedError(f"connection refused: {refused[0]}")
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.rstrip(".")
