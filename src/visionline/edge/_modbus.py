"""Reject signals to a PLC over Modbus TCP (pymodbus client).

Layout, for URL ``modbus://HOST:PORT?coil=C&register=R&unit=U`` (defaults C=0, R=0, U=1):

- coil ``C``: the reject bit of the latest verdict (1 = eject);
- holding registers ``R`` … ``R+3``, written together in one request (function 16) after the coil:
  ``R`` the sequence number (1 … 65535, then 1 again; it changes with every verdict, so the PLC
  watches it), ``R+1``/``R+2`` the item key high/low word (:func:`~visionline.edge.item_key`),
  ``R+3`` flags (bit 0 reject, bit 1 fail-safe).

On every (re)connect the sink reads ``R`` and continues from it, so the next number always differs
from the one the PLC holds, even after the agent or the PLC restarted.
"""

from __future__ import annotations

import threading

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from visionline.edge._sinks import _UrlParts, item_key
from visionline.edge._types import Verdict
from visionline.errors import ServiceUnavailableError

__all__ = ["ModbusSink"]


class ModbusSink:
    """Writes each verdict as a coil and four holding registers; reconnects after a failure."""

    def __init__(
        self,
        host: str,
        port: int = 502,
        coil: int = 0,
        register: int = 0,
        unit: int = 1,
        timeout: float = 1.0,
    ) -> None:
        self.host, self.port = host, port
        self.coil, self.register, self.unit = coil, register, unit
        self.timeout = timeout
        self._client = None
        self._sequence: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> ModbusSink:
        parts = _UrlParts(url, 502, {"coil", "register", "unit"})
        return cls(
            parts.host,
            parts.port,
            coil=parts.integer("coil", 0, 0, 65535),
            register=parts.integer("register", 0, 0, 65532),
            unit=parts.integer("unit", 1, 0, 255),
            timeout=parts.timeout,
        )

    def send(self, verdict: Verdict) -> None:
        """Write the reject coil, then the register block; raise after ``timeout`` seconds."""
        with self._lock:
            try:
                client = self._connected()
                sequence = self._sequence % 65535 + 1
                key = item_key(verdict.item_id)
                flags = int(verdict.reject) | int(verdict.fail_safe) << 1
                self._check(client.write_coil(self.coil, verdict.reject, device_id=self.unit))
                block = [sequence, key >> 16, key & 0xFFFF, flags]
                self._check(client.write_registers(self.register, block, device_id=self.unit))
                self._sequence = sequence
            except (ModbusException, OSError) as exc:
                self._drop()
                raise ServiceUnavailableError(
                    f"The Modbus PLC at {self.host}:{self.port} did not take the reject signal "
                    f"for item {verdict.item_id!r} ({_short(exc)}): check that it is on, reachable "
                    f"and maps coil {self.coil} and holding registers {self.register}"
                    f"-{self.register + 3} for unit {self.unit}."
                ) from exc

    def connect(self) -> None:
        """Connect now (before the first item); a one-sentence error when the PLC is away."""
        with self._lock:
            try:
                self._connected()
            except (ModbusException, OSError) as exc:
                self._drop()
                raise ServiceUnavailableError(
                    f"The Modbus PLC at {self.host}:{self.port} does not answer ({_short(exc)}): "
                    "check that it is on and reachable."
                ) from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connected(self) -> ModbusTcpClient:
        if self._client is not None:
            return self._client
        client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0)
        if not client.connect():
            client.close()
            raise ConnectionException("connection refused or timed out")
        self._client = client
        reply = client.read_holding_registers(self.register, count=1, device_id=self.unit)
        self._check(reply)
        self._sequence = reply.registers[0]
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @staticmethod
    def _check(reply) -> None:
        if reply.isError():
            code = getattr(reply, "exception_code", "?")
            raise ModbusException(f"the PLC answered with exception code {code}")


def _short(exc: BaseException) -> str:
    """The first line of an exception, without pymodbus's 'Modbus Error: [..]' prefix."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split("] ", 1)[-1].rstrip(".")
