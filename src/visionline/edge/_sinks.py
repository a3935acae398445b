"""Opening a reject-signal sink from a URL, and the buffer that keeps the line running while the
PLC is away.

A PLC that does not answer must never stop the line: every sink gives up after its own bounded
timeout with a one-sentence :class:`~visionline.errors.ServiceUnavailableError`, and
:class:`BufferedSink` keeps the signals it could not deliver, in order, and retries them in the
background while the agent goes on deciding.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from urllib.parse import parse_qsl, urlsplit

from visionline.edge._types import SignalSink, Verdict
from visionline.errors import ConfigError, VisionlineError

__all__ = ["BufferedSink", "item_key", "open_sink"]

_log = logging.getLogger(__name__)

_SCHEMES = ("opcua", "modbus", "mqtt", "mqtts")


def open_sink(url: str) -> SignalSink:
    """The sink a URL names: ``opcua://``, ``modbus://``, ``mqtt://`` or ``mqtts://`` (see the
    README's layouts).

    Nothing is connected yet: the first ``send`` connects, so an agent started while its PLC is
    down still starts, decides and buffers.
    """
    scheme = urlsplit(url).scheme.lower()
    try:
        if scheme == "opcua":
            from visionline.edge._opcua import OpcUaSink

            return OpcUaSink.from_url(url)
        if scheme == "modbus":
            from visionline.edge._modbus import ModbusSink

            return ModbusSink.from_url(url)
        if scheme in ("mqtt", "mqtts"):
            from visionline.edge._mqtt import MqttSink

            return MqttSink.from_url(url)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"The {scheme}:// PLC sink needs the package {exc.name!r}: "
            "install it with pip install 'visionline[edge]'."
        ) from exc
    raise ConfigError(
        f"The PLC URL {url!r} has an unknown scheme {scheme or '(none)'!r}: "
        f"use one of {', '.join(s + '://' for s in _SCHEMES)}."
    )


def item_key(item_id: str) -> int:
    """A 32-bit number for an item id that a PLC can compare: the id itself when it is a decimal
    integer below 2**32 (a PLC trigger counter), otherwise the CRC-32 of its UTF-8 bytes."""
    if item_id.isascii() and item_id.isdigit() and int(item_id) < 2**32:
        return int(item_id)
    return zlib.crc32(item_id.encode("utf-8"))


class _UrlParts:
    """A sink URL split into host, port, path and validated query options."""

    def __init__(self, url: str, default_port: int, allowed: set[str]) -> None:
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"The PLC URL {url!r} has an invalid port: use HOST:PORT.") from None
        if not parts.hostname:
            raise ConfigError(
                f"The PLC URL {url!r} names no host: write it as {self.scheme}://HOST:PORT/…."
            )
        self.host = parts.hostname
        self.port = port or default_port
        self.username = parts.username
        self.password = parts.password
        self.path = parts.path
        self.options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(self.options) - allowed - {"timeout"})
        if unknown:
            raise ConfigError(
                f"The PLC URL {url!r} has unknown option(s) {', '.join(unknown)}: "
                f"use {', '.join(sorted(allowed | {'timeout'}))}."
            )
        self.timeout = self.number("timeout", 1.0, minimum=0.01)

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        """A numeric query option, with a sentence naming the fix when it is not a number."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value >= minimum:
            raise ConfigError(
                f"The PLC URL option {name}={raw!r} must be a number of at least {minimum:g}."
            )
        return value

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        """An integer query option within [minimum, maximum]."""
        raw = self.options.get(name)
        if raw is None:
            return default
        if not raw.strip().isdigit() or not minimum <= int(raw) <= maximum:
            raise ConfigError(
                f"The PLC URL option {name}={raw!r} must be an integer from {minimum} to {maximum}."
            )
        return int(raw)

    def where(self) -> str:
        """``scheme://host:port`` for error messages (never the password)."""
        return f"{self.scheme}://{self.host}:{self.port}"


class BufferedSink:
    """Wraps any sink so that ``send`` never raises and never waits on a PLC that is down.

    While the PLC answers, a verdict is written at once on the caller's thread, or, with
    ``background=True`` (the CLI), by the buffer's own thread, so the line never waits for the
    PLC's round trip (a PLC that stalls for 300 ms would otherwise hold up the next items). When a
    write fails, the signal and every later one queue up in order (at most ``capacity``; beyond that the
    oldest are dropped and counted), ``alarm`` goes up, and a background thread retries every
    ``retry_interval`` seconds until the backlog is delivered. ``backlog``, ``alarm``,
    ``delivered``, ``dropped`` and ``last_error`` are for the agent's metrics and status.
    """

    def __init__(
        self, sink: SignalSink, capacity: int = 10_000, retry_interval: float = 0.5,
        background: bool = False,
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"The signal buffer capacity {capacity} must be at least 1.")
        self.sink = sink
        self.capacity = capacity
        self.retry_interval = retry_interval
        self.background = background
        self.delivered = 0
        self.dropped = 0
        self.last_error = ""
        self._pending: deque[Verdict] = deque()
        self._state = threading.Condition()
        self._delivering = threading.Lock()
        self._alarm = False
        self._closed = False
        self._worker = threading.Thread(target=self._retry_loop, name="plc-retry", daemon=True)
        self._worker.start()

    @property
    def backlog(self) -> int:
        """Signals waiting for the PLC."""
        with self._state:
            return len(self._pending)

    @property
    def alarm(self) -> bool:
        """True from the first failed write until the backlog is delivered."""
        with self._state:
            return self._alarm

    def send(self, verdict: Verdict) -> None:
        """Deliver now when the PLC answers; otherwise queue behind the backlog."""
        with self._state:
            if self._closed:
                raise VisionlineError("The PLC signal sink is closed: open a new one to send.")
            if len(self._pending) >= self.capacity:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(verdict)
            if self._alarm:
                return
            if self.background:  # the buffer's thread writes it
                self._state.notify_all()
                return
        self._drain()

    def connect(self) -> None:
        """Open the PLC connection before the first item. A PLC that is away raises the alarm
        here, so the line's first verdicts queue at once instead of each waiting out a connect
        timeout on the way to the ejector; the retry thread connects when the PLC answers."""
        connect = getattr(self.sink, "connect", None)
        if connect is None:
            return
        try:
            connect()
        except Exception as exc:  # noqa: BLE001 - any failure must buffer, not stop the line
            _log.warning("PLC not reachable at start, buffering: %s", exc)
            with self._state:
                self._alarm = True
                self.last_error = str(exc)
                self._state.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the backlog to be delivered; True when it was."""
        end = time.monotonic() + timeout
        with self._state:
            while self._pending and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
            return not self._pending

    def close(self) -> None:
        """Deliver what is queued (up to 2 s while the PLC answers), stop retrying and close the
        wrapped sink; undelivered signals stay counted in ``backlog`` (the outbox still holds
        every verdict)."""
        if not self.alarm:
            self.flush(2.0)
        with self._state:
            self._closed = True
            self._state.notify_all()
        self._worker.join(timeout=5)
        with self._delivering:
            self.sink.close()

    def _drain(self) -> bool:
        """Send pending signals from the head, in order, until empty or a write fails."""
        with self._delivering:
            while True:
                with self._state:
                    if not self._pending or self._closed:
                        if not self._pending:
                            self._alarm = False
                        self._state.notify_all()
                        return not self._pending
                    head = self._pending[0]
                try:
                    self.sink.send(head)
                except Exception as exc:  # noqa: BLE001 - any failure must buffer, not stop the line
                    with self._state:
                        if not self._alarm:
                            _log.warning("PLC signal failed, buffering: %s", exc)
                        self._alarm = True
                        self.last_error = str(exc)
                        self._state.notify_all()
                    return False
                with self._state:
                    if self._pending and self._pending[0] is head:
                        self._pending.popleft()
                    self.delivered += 1

    def _retry_loop(self) -> None:
        while True:
            with self._state:
                while not (self._alarm or self._closed or (self.background and self._pending)):
                    self._state.wait()
                if self._closed:
                    return
                retrying = self._alarm
                if retrying:
                    self._state.wait(self.retry_interval)
                    if self._closed:
                        return
            if retrying and not self._reconnected():
                continue
            if self._drain() and retrying:
                _log.warning("PLC reachable again; backlog delivered")

    def _reconnected(self) -> bool:
        """Whether an alarmed PLC may count as back. With nothing queued no send proves it, so
        the sink connects afresh; without that the alarm cleared (and the log said 'reachable
        again') while a PLC that was away at start stayed away."""
        connect = getattr(self.sink, "connect", None)
        with self._state:
            if self._pending or connect is None:
                return True
        try:
            with self._delivering:
                connect()
        except Exception as exc:  # noqa: BLE001 - any failure keeps the alarm, never the line
            with self._state:
                self.last_error = str(exc)
            return False
        return True
