"""Wire frames of a change stream, as bytes, built once and shared by every connection that sends them.

Two formats carry the same frames: Server-Sent Events (what `EventSource` reads) and newline-delimited JSON
(what a non-browser client gets when it asks for `application/json`). Positions are made by the gateway and
change JSON comes from orjson, which escapes newlines, so no frame can inject SSE fields.
"""

from __future__ import annotations

import enum
import random
from typing import Any

import orjson


class Format(enum.Enum):
    """A stream's wire format; it builds its frames (`gateway.fanout.framing.Framing`)."""

    SSE = "text/event-stream"
    NDJSON = "application/x-ndjson"

    @property
    def ping(self) -> bytes:
        return PING[self]

    def data(self, position: bytes, change_json: bytes) -> bytes:
        return data_frame(self, position, change_json)

    def bookmark(self, position: bytes) -> bytes:
        return bookmark_frame(self, position)

    def control(self, event: str, position: str | None, data: Any) -> bytes:
        return control_frame(self, event, position, data)


PING = {Format.SSE: b": ping\n\n", Format.NDJSON: b"\n"}


def preamble(fmt: Format, retry_ms: int) -> bytes:
    """The first bytes: a jittered `retry:` (so a restarted fleet is not hit by every client at once) and
    LoopBack's `:ok` comment."""
    if fmt is Format.NDJSON:
        return b""
    jittered = int(retry_ms * random.uniform(0.8, 1.2))
    return b"retry: %d\n:ok\n\n" % jittered


def reconnect_body(retry_ms: int, reason: str) -> bytes:
    """The whole body of an SSE request this worker refuses (full, draining, broker down): a `200` whose
    `retry:` makes every EventSource reconnect, through the load balancer, by itself. A non-200 would make
    it give up for good (readyState 2). The comment says why, for people reading it with curl."""
    jittered = int(retry_ms * random.uniform(0.8, 1.2))
    return b"retry: %d\n: %s\n\n" % (jittered, reason.replace("\n", " ").encode())


def data_frame(fmt: Format, position: bytes, change_json: bytes) -> bytes:
    if fmt is Format.SSE:
        return b"id: " + position + b"\nevent: data\ndata: " + change_json + b"\n\n"
    return b'{"id":"' + position + b'","event":"data","data":' + change_json + b"}\n"


def bookmark_frame(fmt: Format, position: bytes) -> bytes:
    """Moves the client's last event id forward without an event (SSE: an `id:`-only frame fires nothing)."""
    if fmt is Format.SSE:
        return b"id: " + position + b"\n\n"
    return b'{"id":"' + position + b'"}\n'


def control_frame(fmt: Format, event: str, position: str | None, data: Any) -> bytes:
    """`reset` and `error` frames; `position` (if any) becomes the client's last event id."""
    payload = orjson.dumps(data)
    if fmt is Format.SSE:
        head = b"id: " + position.encode() + b"\n" if position is not None else b""
        return head + b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
    line: dict[str, Any] = {"event": event, "data": data}
    if position is not None:
        line = {"id": position, **line}
    return orjson.dumps(line) + b"\n"
