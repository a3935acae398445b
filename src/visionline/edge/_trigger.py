"""Item ids from a PLC trigger tag: the counter the PLC raises when it fires the camera.

With `--item-tag opcua://HOST:PORT?node=ns=2;s=Line1.Trigger` every frame is named by the tag's
value when the frame arrives (the source's own id stays in `meta["frame_id"]`), so the reject
signal carries the number the PLC's shift register tracks (`item_key` passes a decimal id
through unchanged). The read is one round trip on the frame's way in, bounded by `timeout`; a PLC
that does not answer leaves the frame its source id, logged, and the line goes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from visionline.edge._frames import Frame, FrameSource
from visionline.edge._sinks import _UrlParts
from visionline.errors import ConfigError, ServiceUnavailableError, VisionlineError

__all__ = ["OpcUaItemTag", "TaggedSource", "open_item_tag"]

log = logging.getLogger("visionline.edge")


class OpcUaItemTag:
    """Reads one OPC UA node (the PLC's trigger counter) per frame."""

    def __init__(self, url: str) -> None:
        parts = _UrlParts(url, 4840, {"node"})
        node = parts.options.get("node")
        if not node:
            raise ConfigError(
                f"The item tag URL {url!r} names no node: add ?node=ns=2;s=Line1.Trigger."
            )
        from asyncua import ua

        try:
            self.node_id = ua.NodeId.from_string(node)
        except Exception:  # noqa: BLE001 - asyncua raises several types for a bad id
            raise ConfigError(
                f"The item tag node id {node!r} is not valid: write it like ns=2;s=Line1.Trigger."
            ) from None
        userinfo = f"{parts.username}:{parts.password or ''}@" if parts.username else ""
        self.endpoint = f"opc.tcp://{userinfo}{parts.host}:{parts.port}{parts.path}"
        self.where, self.timeout = parts.where(), parts.timeout
        self._client: Any = None

    def read(self) -> str:
        """The tag's value as an item id; a one-sentence error when the PLC does not answer."""
        from asyncua.sync import Client

        client = self._client
        try:
            if client is None:
                client = Client(self.endpoint, timeout=self.timeout,
                                sync_wrapper_timeout=self.timeout + 1)
                client.connect()
                self._client = client
            value = client.get_node(self.node_id).read_value()
        except Exception as exc:  # every failure becomes one sentence
            self._client = None
            if client is not None:  # drop the socket and the client's loop without waiting
                with contextlib.suppress(Exception):
                    client.aio_obj.disconnect_socket()
                client.tloop.stop()
            raise ServiceUnavailableError(
                f"The PLC at {self.where} did not give the item tag {self.node_id.to_string()} "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): check that "
                "it is on, reachable and has that node."
            ) from exc
        return str(value)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a dead connection: disconnect stops the loop
                client.disconnect()


def open_item_tag(url: str) -> OpcUaItemTag:
    """The trigger tag a URL names (`opcua://HOST:PORT?node=…`)."""
    if not url.lower().startswith("opcua://"):
        raise ConfigError(
            f"The item tag {url!r} must be an OPC UA node: opcua://HOST:PORT?node=ns=2;s=Line1.Trigger."
        )
    return OpcUaItemTag(url)


class TaggedSource:
    """`source`'s frames, each named by the PLC's trigger tag when it arrives."""

    def __init__(self, source: FrameSource, tag: OpcUaItemTag) -> None:
        self.source, self.tag = source, tag
        self.errors = 0

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.source:
            try:
                value = self.tag.read()
            except VisionlineError as exc:
                self.errors += 1
                log.error("item %s keeps its frame id: %s", frame.item_id, exc)
                yield frame
                continue
            frame.meta["frame_id"] = frame.item_id
            frame.item_id = value
            yield frame

    def close(self) -> None:
        self.source.close()
        self.tag.close()
