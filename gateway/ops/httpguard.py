"""uvicorn's httptools protocol with the limits a server facing clients directly needs (no nginx in front).

uvicorn waits for ever for the rest of an incomplete request (300 connections dribbling headers or a body
were all held 65 s) and takes request headers of any size (a 64 MiB header stalled the health check for
2.5 s). This protocol bounds both, per connection, before the request reaches the app:
- headers must be complete within `GATEWAY_HEADER_TIMEOUT` seconds of the request's first byte (408),
- a body within `GATEWAY_BODY_TIMEOUT` seconds of the end of the headers (408, or the connection closed
  if the app already answered),
- the request line and headers may hold `GATEWAY_MAX_HEADER_BYTES` bytes and `GATEWAY_MAX_HEADERS` fields
  (431).
A stream is unaffected: its request ends with its headers, and what follows is the response.

A connection whose request is incomplete counts toward `GATEWAY_MAX_CONNECTIONS` with the streams
(`CAPACITY`): while they fill it, new streams are refused as at the stream cap (200, `retry:`, end), and a
new connection arriving at the limit makes room by closing the oldest incomplete one (a 408). A slowloris
can thus hold at most the slots the streams leave (or `MIN_INCOMPLETE`), and never keep a client out.

`gateway serve` passes `http="gateway.ops.httpguard:GuardedHttpToolsProtocol"` to uvicorn (an import path,
so that it survives uvicorn's worker processes), and gunicorn runs `GuardedUvicornWorker`; the limits come
from the settings of the worker process.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from gateway.config import load_settings
from gateway.ops import proxyheaders
from gateway.ops.headwrite import HeadWithFirstWrite
from gateway.ops.leanevent import LeanEvent

PROTOCOL = "gateway.ops.httpguard:GuardedHttpToolsProtocol"
INTERFACE: Literal["asgi3"] = "asgi3"
"""Named, not only detected: `GatewayApp.__call__` is a plain call that returns an awaitable (so that a
stream keeps no frame of it), marked as a coroutine function for uvicorn's detection; the servers we run
do not depend on that marker."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int = 10_000


MIN_INCOMPLETE = 16
"""Incomplete requests a worker lets wait even when its streams fill GATEWAY_MAX_CONNECTIONS."""


class Capacity:
    """This process's share of `GATEWAY_MAX_CONNECTIONS`: its streams (the app says how to count them)
    and its connections whose request is still incomplete, oldest first."""

    def __init__(self) -> None:
        self.streams: Callable[[], int] = lambda: 0
        self._incomplete: dict[GuardedHttpToolsProtocol, None] = {}

    @property
    def incomplete(self) -> int:
        return len(self._incomplete)

    def waiting(self, connection: GuardedHttpToolsProtocol) -> None:
        self._incomplete[connection] = None

    def done(self, connection: GuardedHttpToolsProtocol) -> None:
        self._incomplete.pop(connection, None)

    def make_room(self, limit: int) -> None:
        """Close the oldest incomplete connections until one more fits in the slots of `limit` that the
        streams leave (never fewer than `MIN_INCOMPLETE`: requests still arrive at the stream cap)."""
        room = max(limit - self.streams(), MIN_INCOMPLETE)
        while self._incomplete and self.incomplete >= room:
            oldest = next(iter(self._incomplete))
            oldest.refuse(b"408 Request Timeout", "The request took too long and its slot was needed")


LOCAL_ADDRESSES: dict[tuple[str, int | None], tuple[str, int | None]] = {}
"""The server's local (host, port) pairs, one tuple each, shared by every connection's scope."""

CAPACITY = Capacity()
"""The process's one `Capacity` (each worker process has its own)."""


@functools.cache
def process_limits() -> HttpLimits:
    """The limits of this worker process, read once from its settings (as `create_app()` reads them)."""
    settings = load_settings()
    return HttpLimits(
        settings.header_timeout,
        settings.body_timeout,
        settings.max_header_bytes,
        settings.max_headers,
        settings.max_connections,
    )


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that was answered already."""


def _reply(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message
    )


class Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests (`appendleft`, `pop`), as a list: 56 bytes where its `deque`
    takes about 760 on every connection, though nearly every one never pipelines."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with header and body deadlines and header size and count limits, and lighter
    per-connection state (what an idle stream holds for hours).

    The guard's own fields are slots: uvicorn's instance attributes nearly fill what CPython shares between
    the instances of a class (30 keys), and four more made every connection's `__dict__` a dict of its own
    (1.6 KB). The writable and message events are `LeanEvent`s and the pipeline a `Pipeline`; uvicorn's
    proxy-headers wrapper is its plain-call twin (`gateway.ops.proxyheaders`); the local address is one
    shared tuple and the client's host an interned string."""

    __slots__ = ("_deadline", "_header_bytes", "_header_count", "_limits")

    limits: HttpLimits | None = None
    """Set on a subclass to bypass the settings (tests); otherwise `process_limits()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = proxyheaders.plain(self.app)
        self.pipeline = Pipeline()  # type: ignore[assignment]
        self._limits = self.limits or process_limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.server is not None:  # the same few local addresses on every connection: one tuple each
            self.server = LOCAL_ADDRESSES.setdefault(self.server, self.server)
        if self.client is not None:
            self.client = (sys.intern(self.client[0]), self.client[1])
        writable = LeanEvent()
        writable.set()
        self.flow._is_writable_event = writable  # type: ignore[assignment]
        CAPACITY.make_room(self._limits.max_connections)
        CAPACITY.waiting(self)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        CAPACITY.done(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # not after our own 408/431 (parsing stopped by `_Refused`)
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        CAPACITY.waiting(self)
        self._header_bytes = self._header_count = 0
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(
                self._limits.header_timeout, b"408 Request Timeout", "The request headers took too long"
            )

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a new request: its task has not run yet, nobody waits on it
            self.cycle.message_event = LeanEvent()  # type: ignore[assignment]
            self.cycle.transport = HeadWithFirstWrite(self.cycle, self.transport)  # type: ignore[assignment]
        self._arm(self._limits.body_timeout, b"408 Request Timeout", "The request body took too long")

    def on_message_complete(self) -> None:
        self._disarm()
        CAPACITY.done(self)
        super().on_message_complete()

    def _count(self, size: int, fields: int) -> None:
        self._header_bytes += size
        self._header_count += fields
        limits = self._limits
        if self._header_bytes > limits.max_header_bytes or self._header_count > limits.max_headers:
            self.refuse(
                b"431 Request Header Fields Too Large",
                f"The request line and headers may hold {limits.max_header_bytes} bytes and "
                f"{limits.max_headers} fields",
            )
            raise _Refused

    def _arm_header_deadline(self) -> None:
        self._arm(self._limits.header_timeout, b"408 Request Timeout", "The request headers took too long")

    def _arm(self, seconds: float, status: bytes, message: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self.refuse, status, message)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def refuse(self, status: bytes, message: str) -> None:
        """Answer in LoopBack's envelope unless the app already began its reply, then close."""
        self._disarm()
        CAPACITY.done(self)
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            code = int(status[:3])
            body = b'{"error":{"statusCode":%d,"name":"Error","message":"%s"}}' % (code, message.encode())
            self.transport.write(_reply(status, body))
        self.transport.close()


class GuardedUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker (deploy/gunicorn.conf.py), serving with `GuardedHttpToolsProtocol`."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": PROTOCOL, "interface": INTERFACE}
