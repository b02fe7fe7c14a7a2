"""Slow consumers catch up from history instead of being cut off (stall-and-resume), over real HTTP.

A subscriber's bound counts what waits for its socket, so a batch larger than the bound goes out in pieces;
one that falls behind catches up from the broker and rejoins live; only trimmed history (`reset`) or a socket
that accepts nothing for the write timeout ends it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest

from gateway.app import GatewayApp
from gateway.client.sse import ServerSentEvent, SSEParser
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.sse.helpers import OpenStream, open_stream, serve

STREAM = "/api/Todos/change-stream"
ROWS = 500
READERS = 100
TITLE = 2080  # 500 rows of these are 1,046,501 bytes: one write just under the 1 MiB body limit


def sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with `labels` in a text exposition (0 when absent)."""
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(label in line for label in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


class ThrottledStream:
    """A change stream read over a raw socket with a tiny receive buffer, at a pace the test sets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._http = h11.Connection(h11.CLIENT)
        self.parser = SSEParser()
        self.events: list[ServerSentEvent] = []
        self.ended = False

    @classmethod
    async def open(cls, port: int, path: str) -> ThrottledStream:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        stream = cls(reader, writer)
        request = h11.Request(
            method="GET", target=path, headers=[("host", "x"), ("accept", "text/event-stream")]
        )
        writer.write(stream._http.send(request) or b"")
        return stream

    async def read(self, size: int) -> None:
        """Read at most `size` bytes from the socket and parse what they complete."""
        data = await self._reader.read(size)
        self._http.receive_data(data)
        while True:
            event = self._http.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Data):
                self.events.extend(self.parser.feed(bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                return

    async def read_until(self, done: Any, *, chunk: int, pause: float, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not done(self):
                assert not self.ended, "the server ended the stream"
                await self.read(chunk)
                await asyncio.sleep(pause)

    def titles(self) -> list[str]:
        return [json.loads(e.data)["data"]["title"] for e in self.events if e.event == "data"]

    def close(self) -> None:
        self._writer.close()


async def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    settings: dict[str, Any] = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"}
    return Settings(models=EXAMPLE_MODELS, **(settings | overrides))


@pytest.fixture(params=["sqlite-memory", "postgresql-redis"])
async def gateway(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_database: DatabaseFactory,
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp]]:
    """A gateway in this process on SQLite and the embedded broker, then on PostgreSQL and Redis."""
    overrides: dict[str, Any] = {}
    if request.param == "postgresql-redis":
        overrides = {
            "database_url": await postgres_database(),
            "broker_url": redis_url,
            "redis_prefix": redis_prefix,
        }
    async with (
        serve(await settings_for(tmp_path, **overrides)) as (url, app),
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        yield client, app


async def open_streams(stack: AsyncExitStack, client: httpx.AsyncClient, count: int) -> list[OpenStream]:
    """`count` change streams open at once, each past its opening frame."""
    streams = [await stack.enter_async_context(open_stream(client, STREAM)) for _ in range(count)]
    for stream in streams:
        await stream.read_until(lambda s: s.parser.last_event_id != "")
    return streams


async def read_changes(client: httpx.AsyncClient, count: int, opened: asyncio.Event) -> bytes:
    """A fast reader that keeps the stream's bytes and only counts frames as they come (no SSE parsing,
    so 100 of them in this process cost little); returns the body once `count` changes arrived."""
    marker = b"\nevent: data\n"
    body = bytearray()
    seen = 0
    async with client.stream("GET", STREAM) as response:
        async for chunk in response.aiter_bytes():
            scan_from = max(0, len(body) - len(marker) + 1)
            body += chunk
            if not opened.is_set() and b"\nid: " in body:
                opened.set()
            seen += body.count(marker, scan_from)
            if seen >= count:
                return bytes(body)
    raise AssertionError(f"the stream ended after {seen} changes")


async def test_one_mebibyte_write_reaches_every_fast_reader(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    """One legal write bigger than a subscriber's bound goes out in pieces to 100 readers on one worker;
    none is cut off, none stalls, each gets every row once and in order."""
    client, _ = gateway
    rows = [{"title": f"{n:04d}" + "x" * (TITLE - 4)} for n in range(ROWS)]
    body = json.dumps(rows).encode()
    assert 1_000_000 < len(body) < 1_048_576
    limits = httpx.Limits(max_connections=READERS + 10)
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60, limits=limits) as readers:
        opened = [asyncio.Event() for _ in range(READERS)]
        tasks = [asyncio.create_task(read_changes(readers, ROWS, event)) for event in opened]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(event.wait() for event in opened))
            response = await client.post(
                "/api/Todos", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200
            async with asyncio.timeout(120):
                received = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        expected = [b"%04d" % n for n in range(ROWS)]
        for stream in received:
            assert re.findall(rb'"title":"(\d{4})x', stream) == expected
    metrics = (await client.get("/metrics")).text
    assert sample(metrics, "gateway_slow_subscriber_cutoffs_total") == 0
    assert sample(metrics, "gateway_slow_subscriber_stalls_total") == 0


async def write_titles(client: httpx.AsyncClient, prefix: str, count: int, size: int = 1000) -> list[str]:
    """`count` creates in POSTs of 20 rows; returns their titles in commit order."""
    titles = [f"{prefix}{n:05d}-" + "x" * size for n in range(count)]
    for start in range(0, count, 20):
        response = await client.post("/api/Todos", json=[{"title": t} for t in titles[start : start + 20]])
        assert response.status_code == 200
    return titles


async def write_until_stalled(client: httpx.AsyncClient, prefix: str) -> list[str]:
    """Creates of 4 kB rows, 20 per POST, until a subscriber stalls (the kernel's socket buffers take a
    few MB first); returns their titles in commit order."""
    titles: list[str] = []
    async with asyncio.timeout(60):
        while not sample((await client.get("/metrics")).text, "gateway_slow_subscriber_stalls_total"):
            titles += await write_titles(client, f"{prefix}{len(titles):05d}", 20, size=4000)
    return titles


async def test_a_throttled_reader_catches_up_and_gets_every_event_once(tmp_path: Path) -> None:
    settings = await settings_for(tmp_path, subscriber_max_events=10, subscriber_max_bytes=8192)
    async with serve(settings) as (url, _), httpx.AsyncClient(base_url=url, timeout=60) as client:
        port = int(url.rsplit(":", 1)[1])
        slow = await ThrottledStream.open(port, STREAM)
        try:
            await slow.read_until(lambda s: s.parser.last_event_id != "", chunk=4096, pause=0)
            async with open_stream(client, STREAM) as fast:
                await fast.read_until(lambda s: s.parser.last_event_id != "")
                titles = await write_until_stalled(client, "a")
                await fast.read_until(lambda s: len(s.data_events) >= len(titles))
                assert [c["data"]["title"] for c in fast.changes()] == titles
            count = len(titles)
            await slow.read_until(lambda s: len(s.titles()) >= count, chunk=65536, pause=0.001)
            assert slow.titles() == titles
            more = await write_titles(client, "b", 5)  # back live: later writes arrive too
            await slow.read_until(lambda s: len(s.titles()) >= count + 5, chunk=65536, pause=0)
            assert slow.titles() == titles + more
            assert [e.event for e in slow.events] == ["data"] * (count + 5)
            metrics = (await client.get("/metrics")).text
        finally:
            slow.close()
    assert sample(metrics, "gateway_slow_subscriber_catch_ups_total") >= 1
    assert sample(metrics, "gateway_slow_subscriber_cutoffs_total") == 0


async def test_a_reader_whose_history_is_trimmed_meanwhile_gets_a_reset(tmp_path: Path) -> None:
    settings = await settings_for(
        tmp_path, subscriber_max_events=10, subscriber_max_bytes=8192, stream_maxlen=100, relay_batch=20
    )
    async with serve(settings) as (url, _), httpx.AsyncClient(base_url=url, timeout=60) as client:
        port = int(url.rsplit(":", 1)[1])
        slow = await ThrottledStream.open(port, STREAM)
        try:
            await slow.read_until(lambda s: s.parser.last_event_id != "", chunk=4096, pause=0)
            titles = await write_until_stalled(client, "a")  # it reads nothing meanwhile
            titles += await write_titles(client, "c", 200)  # and what it needs is trimmed
            await slow.read_until(lambda s: any(e.event == "reset" for e in s.events), chunk=4096, pause=0)
            after = await write_titles(client, "b", 3)
            await slow.read_until(lambda s: s.titles()[-1:] == after[-1:], chunk=65536, pause=0)
            # On a busy box the relay may still be trimming while the reader catches up, so it may be told
            # `reset` more than once; each is honest, and nothing comes twice or out of order.
            resets = [n for n, e in enumerate(slow.events) if e.event == "reset"]
            for index in resets:
                reset = slow.events[index]
                assert json.loads(reset.data) == {
                    "reason": "history-expired",
                    "position": reset.last_event_id,
                }
            before = [json.loads(e.data)["data"]["title"] for e in slow.events[: resets[0]]]
            assert before == titles[: len(before)], "what came before the reset is a gap-free prefix"
            # After the last reset, every change after its position: the oldest retained ones on (and those
            # the relay published after the reset), then live.
            retained = [json.loads(e.data)["data"]["title"] for e in slow.events[resets[-1] + 1 :]][:-3]
            assert retained
            assert len(before) + len(retained) < len(titles), "some history was lost"
            assert retained == titles[-len(retained) :]
            order = {title: n for n, title in enumerate(titles + after)}
            received = [order[title] for title in slow.titles()]
            assert received == sorted(set(received)), "nothing twice, nothing out of order"
            assert slow.titles()[-3:] == after
            metrics = (await client.get("/metrics")).text
        finally:
            slow.close()
    assert sample(metrics, "gateway_slow_subscriber_cutoffs_total", reason="history-expired") == len(resets)


async def test_a_socket_that_accepts_nothing_is_cut_off_after_the_write_timeout(tmp_path: Path) -> None:
    settings = await settings_for(
        tmp_path, subscriber_max_events=10, subscriber_max_bytes=8192, write_timeout=1.0
    )
    async with serve(settings) as (url, app), httpx.AsyncClient(base_url=url, timeout=60) as client:
        port = int(url.rsplit(":", 1)[1])
        stuck = await ThrottledStream.open(port, STREAM)
        try:
            await stuck.read_until(lambda s: s.parser.last_event_id != "", chunk=4096, pause=0)
            await write_until_stalled(client, "a")
            async with asyncio.timeout(30):
                while app.gateway.hub.count:
                    await asyncio.sleep(0.05)
            metrics = (await client.get("/metrics")).text
        finally:
            stuck.close()
    assert sample(metrics, "gateway_slow_subscriber_cutoffs_total", reason="write-timeout") == 1
