"""A minimal SSE subscriber on `asyncio.Protocol`, cheap enough to hold thousands of streams in one process.

Why not httpx/aiohttp: on a 2-core box the load generator shares the CPU with the server, and a general HTTP
client costs more per event than the server does (STACK-NOTES, "Load generation"). This one does per TCP read:
one clock read, a chunked-encoding decode (one slice per HTTP chunk, normally one per read), one
`bytes.count` for the delivery count, and one regex scan for the writer timestamps. No per-event Python
object is built except one int per latency sample.

Latency is `receive time - writer timestamp`: the writer puts `time.time_ns()` into the record's `title`
right before it sends the POST, so the figure covers request, commit, relay, broker, fan-out and the socket
(commit→client, measured from the writer's side of the commit). Both clocks are this machine's.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from dataclasses import dataclass, field

DATA_MARKER = b"\nevent: data\n"
OK_MARKER = b":ok\n"
PING_MARKER = b": ping\n"
TITLE = re.compile(rb'"title":"(\d{19})"')


@dataclass
class Stats:
    """Counters shared by every subscriber of one run (one event loop, so no locks)."""

    connected: int = 0
    ready: int = 0  # got `:ok`
    deliveries: int = 0
    pings: int = 0
    bytes: int = 0
    reads: int = 0
    disconnects: int = 0  # streams that ended or broke after being ready
    errors: list[str] = field(default_factory=list)
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    record: bool = True  # collect latency samples

    def reset(self) -> None:
        """Zero the delivery counters (after warm-up), keeping the connection counts."""
        self.deliveries = self.pings = self.bytes = self.reads = 0
        self.latencies_us = array("q")


class SSESubscriber(asyncio.Protocol):
    """One `GET <path>` change stream. Parses just enough of HTTP/1.1 and SSE to count and time events."""

    __slots__ = (
        "_body",
        "_chunk_left",
        "_head",
        "_in_body",
        "_partial",
        "_ready",
        "_stats",
        "closed",
        "ready",
        "request",
        "transport",
    )

    def __init__(self, request: bytes, stats: Stats) -> None:
        self.request = request
        self._stats = stats
        self._head = b""
        self._in_body = False
        self._chunk_left = 0  # bytes of the current HTTP chunk still to come (plus its CRLF)
        self._partial = b""  # a chunk-size line cut by the end of a read
        self._body = b""  # decoded SSE bytes not yet ending in a blank line
        self._ready = False
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # done at `:ok` (or when it failed)
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self._stats.connected += 1
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        stats = self._stats
        stats.reads += 1
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            status = head[: head.find(b"\r\n")]
            if b" 200 " not in status:
                stats.errors.append(status.decode(errors="replace"))
                self._fail()
                return
            self._in_body = True
        body = self._dechunk(data)
        if body is None:
            return
        stats.bytes += len(body)
        pending = self._body + body if self._body else body
        end = pending.rfind(b"\n\n")
        if end < 0:
            self._body = pending
            return
        complete, self._body = pending[: end + 2], pending[end + 2 :]
        if not self._ready and OK_MARKER in complete:
            self._ready = True
            stats.ready += 1
            self.ready.set_result(None)
        count = complete.count(DATA_MARKER)
        if count:
            stats.deliveries += count
            if stats.record:
                samples = stats.latencies_us
                for stamp in TITLE.findall(complete):
                    samples.append((now - int(stamp)) // 1000)
        elif PING_MARKER in complete:
            stats.pings += complete.count(PING_MARKER)

    def _dechunk(self, data: bytes) -> bytes | None:
        """Strip HTTP chunk framing; None when the terminating chunk arrived."""
        if self._partial:
            data, self._partial = self._partial + data, b""
        out = []
        pos = 0
        size = len(data)
        while pos < size:
            left = self._chunk_left
            if left > 2:
                take = min(left - 2, size - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._chunk_left -= take
            elif left:  # the CRLF after a chunk's data
                take = min(left, size - pos)
                pos += take
                self._chunk_left -= take
            else:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:  # a chunk-size line split across reads: keep it for the next one
                    self._partial = data[pos:]
                    break
                length = int(data[pos:line_end], 16)
                pos = line_end + 2
                if length == 0:
                    self._finish()
                    return None
                self._chunk_left = length + 2
        return out[0] if len(out) == 1 else b"".join(out)

    def _finish(self) -> None:
        if self._ready:
            self._stats.disconnects += 1
        self._ready = False
        if self.transport is not None:
            self.transport.close()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.connected -= 1
        if self._ready:
            self._stats.disconnects += 1
            if exc is not None:
                self._stats.errors.append(f"stream broken: {exc!r}")
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_result(None)

    def close(self) -> None:
        self._ready = False  # a close we asked for is not a disconnect
        if self.transport is not None:
            self.transport.close()


def stream_request(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()


async def open_subscribers(
    host: str,
    port: int,
    path: str,
    count: int,
    stats: Stats,
    *,
    source_ips: list[str] | None = None,
    concurrency: int = 200,
    timeout: float = 120.0,
) -> list[SSESubscriber]:
    """Open `count` streams, at most `concurrency` connecting at once, and wait until all said `:ok`.

    `source_ips` (e.g. 127.0.0.2, 127.0.0.3, ...) spread the client ends over several addresses, for more
    than the ~28k ephemeral ports one source address has.
    """
    loop = asyncio.get_running_loop()
    request = stream_request(host, port, path)
    gate = asyncio.Semaphore(concurrency)
    subscribers: list[SSESubscriber] = []

    async def one(index: int) -> None:
        local = (source_ips[index % len(source_ips)], 0) if source_ips else None
        async with gate:
            subscriber = SSESubscriber(request, stats)
            await loop.create_connection(lambda: subscriber, host, port, local_addr=local)
            subscribers.append(subscriber)
            # Hold the slot until this stream is ready, so the server's accept queue never overflows.
            await asyncio.wait_for(subscriber.ready, timeout)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures[:5]:
        stats.errors.append(f"connect failed: {failure!r}")
    return subscribers
