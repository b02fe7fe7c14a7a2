"""The write side of a benchmark: POST creates at a fixed rate, each stamped with the time it was sent.

Open loop: write `i` is due at `start + i / rate`, whatever happened to the writes before it, so a slow
server shows up as latency (and as a writer that fell behind, reported), not as a politely lower rate.
A few keep-alive connections with a hand-rolled HTTP/1.1 exchange keep the writer's own CPU per request far
below what the server spends on it (a general HTTP client would cost about as much as the server).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from dataclasses import dataclass, field


@dataclass
class WriteStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    late: int = 0  # writes that started more than 10 ms after they were due
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    errors: list[str] = field(default_factory=list)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that sends a request and reads a Content-Length response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
            status = int(raw[9:12])
            length = 0
            for line in raw.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, await self._reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def create_body(batch: int) -> bytes:
    """A create whose `title` is the send time in ns (the subscriber's clock reads it back)."""
    stamp = time.time_ns()
    if batch == 1:
        return b'{"title":"%d"}' % stamp
    return b"[" + b",".join(b'{"title":"%d"}' % stamp for _ in range(batch)) + b"]"


async def drive(
    host: str,
    port: int,
    path: str,
    *,
    rate: float,
    duration: float,
    stats: WriteStats,
    batch: int = 1,
    connections: int = 8,
) -> float:
    """Send `rate` POSTs per second for `duration` seconds; returns the time it really took.

    Each POST creates `batch` records (one transaction, so one coalesced batch downstream).
    """
    if rate <= 0 or duration <= 0:
        return 0.0
    loop = asyncio.get_running_loop()
    total = int(rate * duration)
    tickets = itertools.count()
    start = loop.time() + 0.05

    async def worker() -> None:
        connection = HttpConnection(host, port)
        try:
            while (index := next(tickets)) < total:
                due = start + index / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.01:
                    stats.late += 1
                body = create_body(batch)
                began = time.perf_counter_ns()
                stats.sent += 1
                try:
                    status, reply = await connection.request("POST", path, body)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    stats.failed += 1
                    stats.errors.append(repr(exc))
                    continue
                if status == 200:
                    stats.ok += 1
                    stats.latencies_us.append((time.perf_counter_ns() - began) // 1000)
                else:
                    stats.failed += 1
                    stats.errors.append(f"{status}: {reply[:200]!r}")
        finally:
            connection.close()

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return loop.time() - began
