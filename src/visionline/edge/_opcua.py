"""Reject signals to a PLC over OPC UA (asyncua client), from the agent's synchronous thread.

Layout, for URL ``opcua://HOST:PORT/PATH?node=ns=2;s=Line1`` (the PLC is the server):

- ``ns=2;s=Line1.ItemId`` (String): the item id of the latest verdict;
- ``ns=2;s=Line1.Reject`` (Boolean): true = eject that item;
- ``ns=2;s=Line1.Sequence`` (UInt32): +1 with every verdict, the tag the PLC program watches.

The three are written in one Write request, in that order, so when the PLC sees a new
``Sequence`` the id and the bit beside it already belong to it. Each node can be named on its own
(``item=``, ``reject=``, ``sequence=``; e.g. Siemens ``ns=3;s="DB_Vision"."Reject"``), and
``failsafe=`` adds a Boolean that is true when the verdict took the fail-safe. On every (re)connect
the sink reads ``Sequence`` and continues from it, so the next number always differs from the one
the PLC holds, even after the agent or the PLC restarted.
User and password go in the URL (``opcua://user:pass@HOST:PORT``). A signed or encrypted channel
is ``security=POLICY,MODE,CERT,KEY[,SERVER_CERT]``, e.g. ``Basic256Sha256,SignAndEncrypt,
/etc/visionline/agent.der,/etc/visionline/agent.pem``; the agent takes its application URI from
its certificate, and the PLC must trust that certificate.

asyncua is asynchronous and ``send`` is called from the agent's thread, so each sink runs its own
event loop in a private thread; every call is bounded by ``timeout`` and a failed call drops the
connection, so the next ``send`` reconnects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from visionline.edge._sinks import _UrlParts
from visionline.edge._types import Verdict
from visionline.errors import ConfigError, ServiceUnavailableError

__all__ = ["OpcUaSink"]

_ROLES = ("item", "reject", "sequence", "failsafe")
_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
_MODES = ("Sign", "SignAndEncrypt")
_SUFFIX = {"item": "ItemId", "reject": "Reject", "sequence": "Sequence"}


class OpcUaSink:
    """Writes ItemId, Reject (and FailSafe) and Sequence to the PLC's nodes per verdict."""

    def __init__(
        self, endpoint: str, nodes: dict[str, str], timeout: float = 1.0, security: str = ""
    ) -> None:
        missing = [role for role in ("item", "reject", "sequence") if role not in nodes]
        if missing:
            raise ConfigError(
                f"The OPC UA sink needs the node(s) {', '.join(missing)}: "
                "add ?node=ns=2;s=Line1 (or item=…&reject=…&sequence=…) to the URL."
            )
        self.endpoint = endpoint
        self.timeout = timeout
        self.security = security
        self._application_uri = _check_security(security) if security else ""
        self.node_ids: dict[str, ua.NodeId] = {}
        for role, text in nodes.items():
            try:
                self.node_ids[role] = ua.NodeId.from_string(text)
            except Exception:  # noqa: BLE001 - asyncua raises several types for a bad id
                raise ConfigError(
                    f"The OPC UA node id {text!r} for {role} is not valid: write it like "
                    "ns=2;s=Line1.Reject or ns=3;i=1001."
                ) from None
        self._client = None
        self._sequence: int | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua", daemon=True)
        self._thread.start()

    @classmethod
    def from_url(cls, url: str) -> OpcUaSink:
        parts = _UrlParts(url, 4840, {"node", "security", *_ROLES})
        nodes = {role: parts.options[role] for role in _ROLES if parts.options.get(role)}
        prefix = parts.options.get("node")
        if prefix:
            for role, suffix in _SUFFIX.items():
                nodes.setdefault(role, f"{prefix}.{suffix}")
        userinfo = ""
        if parts.username:
            userinfo = parts.username + (f":{parts.password}" if parts.password else "") + "@"
        endpoint = f"opc.tcp://{userinfo}{parts.host}:{parts.port}{parts.path}"
        return cls(endpoint, nodes, parts.timeout, parts.options.get("security", ""))

    @property
    def where(self) -> str:
        """The endpoint without credentials, for messages."""
        return "opc.tcp://" + self.endpoint.split("://", 1)[1].rpartition("@")[2]

    def send(self, verdict: Verdict) -> None:
        """Write the verdict's nodes; raise a one-sentence error within 2 x ``timeout`` + 1 s."""
        self._call(
            self._write(verdict),
            lambda why: (
                f"The OPC UA PLC at {self.where} did not take the reject signal for item "
                f"{verdict.item_id!r} ({why}): check that it is on, reachable and has the "
                f"writable nodes {', '.join(map(str, self._node_texts()))}."
            ),
        )

    def connect(self) -> None:
        """Connect now (before the first item) so the first verdict does not pay for the
        session set-up; raises the same one-sentence error as `send` when the PLC is away."""
        self._call(
            self._connected(),
            lambda why: (
                f"The OPC UA PLC at {self.where} does not answer ({why}): check that it is on "
                "and reachable."
            ),
        )

    def _call(self, coroutine: Any, message: Callable[[str], str]) -> None:
        """Run `coroutine` on the session's loop; any failure drops the session and becomes one
        `ServiceUnavailableError` sentence, `message(reason)`."""
        with self._lock:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            try:
                future.result(timeout=2 * self.timeout + 1)
            except Exception as exc:  # every failure becomes one sentence
                future.cancel()
                self._run_quietly(self._drop())
                raise ServiceUnavailableError(message(_describe(exc))) from exc

    def close(self) -> None:
        with self._lock:
            if self._loop.is_closed():
                return
            self._run_quietly(self._drop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()

    async def _write(self, verdict: Verdict) -> None:
        client = await self._connected()
        sequence = self._sequence % 0xFFFFFFFF + 1
        writes = [
            ("item", verdict.item_id, ua.VariantType.String),
            ("reject", verdict.reject, ua.VariantType.Boolean),
        ]
        if "failsafe" in self.node_ids:
            writes.append(("failsafe", verdict.fail_safe, ua.VariantType.Boolean))
        writes.append(("sequence", sequence, ua.VariantType.UInt32))
        nodes = [client.get_node(self.node_ids[role]) for role, _, _ in writes]
        values = [ua.DataValue(ua.Variant(value, kind)) for _, value, kind in writes]
        await asyncio.wait_for(client.write_values(nodes, values), self.timeout)
        self._sequence = sequence

    async def _connected(self) -> Client:
        if self._client is not None:
            return self._client
        client = Client(self.endpoint, timeout=self.timeout)
        try:
            if self.security:
                client.application_uri = self._application_uri
                await asyncio.wait_for(client.set_security_string(self.security), self.timeout)
            await asyncio.wait_for(client.connect(), self.timeout)
        except Exception:
            client.disconnect_socket()
            raise
        self._client = client
        node = client.get_node(self.node_ids["sequence"])
        self._sequence = int(await asyncio.wait_for(node.read_value(), self.timeout) or 0)
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.timeout)
            client.disconnect_socket()

    def _run_quietly(self, coro) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout + 1)

    def _node_texts(self) -> list[str]:
        return [self.node_ids[role].to_string() for role in _ROLES if role in self.node_ids]


def _check_security(security: str) -> str:
    """Validate ``POLICY,MODE,CERT,KEY[,SERVER_CERT]`` up front; return the certificate's
    application URI (the client must present the URI its certificate names)."""
    from cryptography import x509

    parts = security.split(",")
    form = "security=POLICY,MODE,CERT,KEY[,SERVER_CERT]"
    if len(parts) not in (4, 5) or parts[0] not in _POLICIES or parts[1] not in _MODES:
        raise ConfigError(
            f"The OPC UA option security={security!r} must read {form} with POLICY one of "
            f"{', '.join(_POLICIES)} and MODE Sign or SignAndEncrypt."
        )
    files = [parts[2], parts[3].split("::", 1)[0], *parts[4:]]
    for name in files:
        if not Path(name).is_file():
            raise ConfigError(f"The OPC UA security file {name!r} does not exist: fix the path.")
    data = Path(parts[2]).read_bytes()
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return names.get_values_for_type(x509.UniformResourceIdentifier)[0]
    except (ValueError, IndexError, x509.ExtensionNotFound):
        raise ConfigError(
            f"The OPC UA certificate {parts[2]!r} is not an application certificate with a URI: "
            "make one whose subject alternative name holds the agent's urn:… URI."
        ) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | concurrent.futures.TimeoutError):
        return "no answer in time"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.rstrip(".")
