"""Change streams across real gateway processes sharing PostgreSQL and Redis.

Each test starts its own `gateway serve` subprocesses on their own ports, with their own database and Redis
key prefix, and reads the streams over real HTTP with a spec-compliant SSE parser.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.server import GatewayProcess
from tests.sse.helpers import open_stream

STREAM = "/api/Todos/change-stream"
Cluster = Callable[..., list[GatewayProcess]]


@pytest.fixture
async def cluster(
    postgres_database: DatabaseFactory, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """Start N gateway processes on one PostgreSQL database and one Redis prefix."""
    database_url = await postgres_database()
    with ExitStack() as stack:

        def start(count: int = 1, **settings: Any) -> list[GatewayProcess]:
            env = {
                "GATEWAY_DATABASE_URL": database_url,
                "GATEWAY_BROKER_URL": redis_url,
                "GATEWAY_REDIS_PREFIX": redis_prefix,
                "GATEWAY_MODELS": str(EXAMPLE_MODELS),
                "GATEWAY_DRAIN_SECONDS": "0.5",
                **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
            }
            return [
                stack.enter_context(GatewayProcess(env, log_path=tmp_path / f"gateway-{n}.log"))
                for n in range(count)
            ]

        yield start


async def test_resume_on_another_process_at_200_random_points(cluster: Cluster) -> None:
    """Read part of the stream from one process, drop, resume on the other with Last-Event-ID while writes
    continue through both: every event arrives exactly once, in stream order."""
    a, b = cluster(2)
    rng = random.Random(7)
    writes = 700
    async with httpx.AsyncClient(timeout=20) as http:
        done_writing = asyncio.Event()

        async def writer() -> None:
            for n in range(writes):
                target = (a, b)[n % 2]
                response = await http.post(f"{target.url}/api/Todos", json={"title": f"w{n}"})
                assert response.status_code == 200
            done_writing.set()

        received: list[tuple[str, str]] = []
        async with open_stream(http, f"{a.url}{STREAM}") as first:
            await first.read_until(lambda s: s.parser.last_event_id != "")
            origin = first.parser.last_event_id
        writing = asyncio.create_task(writer())
        last_id = origin
        for hop in range(200):
            server = (b, a)[hop % 2]
            wanted = rng.randint(1, 4)
            async with open_stream(http, f"{server.url}{STREAM}", headers={"last-event-id": last_id}) as part:
                await part.read_until(
                    lambda s, n=wanted: len(s.data_events) >= n or done_writing.is_set(), 20
                )
                if done_writing.is_set():
                    await part.read_until(lambda s: len(received) + len(s.data_events) >= writes, 20)
                received.extend(
                    (e.last_event_id, json.loads(e.data)["data"]["title"]) for e in part.data_events
                )
                last_id = part.parser.last_event_id
        await writing
        async with open_stream(http, f"{a.url}{STREAM}", headers={"last-event-id": last_id}) as rest:
            await rest.read_until(lambda s: len(received) + len(s.data_events) >= writes, 20)
            received.extend((e.last_event_id, json.loads(e.data)["data"]["title"]) for e in rest.data_events)
        async with open_stream(http, f"{b.url}{STREAM}", headers={"last-event-id": origin}) as full:
            await full.read_until(lambda s: len(s.data_events) >= writes, 20)
            expected = [(e.last_event_id, json.loads(e.data)["data"]["title"]) for e in full.data_events]
    assert received == expected
    assert sorted(title for _, title in received) == sorted(f"w{n}" for n in range(writes))


async def test_trimmed_history_gives_a_reset_never_a_partial_replay(cluster: Cluster) -> None:
    (gateway,) = cluster(1, stream_maxlen=100, relay_batch=10)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        old = (await http.get("/api/Todos")).headers["x-change-stream-position"]
        async with open_stream(http, STREAM) as watcher:
            for n in range(400):
                await http.post("/api/Todos", json={"title": f"t{n}"})
            await watcher.read_until(lambda s: len(s.data_events) >= 400, 20)
        async with open_stream(http, STREAM, headers={"last-event-id": old}) as stream:
            await stream.read_until(lambda s: len(s.events) >= 1)
            await http.post("/api/Todos", json={"title": "live"})
            await stream.read_until(lambda s: any('"title":"live"' in e.data for e in s.data_events))
    reset = stream.events[0]
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"reason": "history-expired", "position": reset.last_event_id}
    # Told first; then every change after the reset's position: the oldest retained one on, then live.
    titles = [json.loads(e.data)["data"]["title"] for e in stream.data_events]
    first = int(titles[0].removeprefix("t"))
    assert 0 < first < 400 - 50
    assert titles == [f"t{n}" for n in range(first, 400)] + ["live"]


async def test_lost_broker_history_resets_live_and_resuming_subscribers(
    cluster: Cluster, redis_url: str, redis_prefix: str
) -> None:
    (gateway,) = cluster(1)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        async with open_stream(http, STREAM) as live:
            await http.post("/api/Todos", json={"title": "before"})
            await live.read_until(lambda s: len(s.data_events) >= 1)
            before = live.parser.last_event_id
            client = aioredis.from_url(redis_url)
            await client.delete(f"{{{redis_prefix}:Todo}}:s", f"{{{redis_prefix}:Todo}}:epoch")
            await client.aclose()
            await http.post("/api/Todos", json={"title": "after"})
            await live.read_until(
                lambda s: any(e.event == "reset" for e in s.events) and len(s.data_events) >= 2
            )
        reset = next(e for e in live.events if e.event == "reset")
        assert json.loads(reset.data)["reason"] == "epoch-changed"
        assert [json.loads(e.data)["data"]["title"] for e in live.data_events] == ["before", "after"]
        async with open_stream(http, STREAM, headers={"last-event-id": before}) as resumed:
            await resumed.read_until(lambda s: len(s.events) >= 1)
        assert resumed.events[0].event == "reset"
        assert json.loads(resumed.events[0].data)["reason"] == "epoch-changed"


@pytest.fixture
def stalled_socket() -> Iterator[Callable[[int, str], socket.socket]]:
    sockets: list[socket.socket] = []

    def connect(port: int, path: str) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        sockets.append(sock)
        return sock

    yield connect
    for sock in sockets:
        sock.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_stalled_client_is_cut_off_and_hurts_nobody(
    cluster: Cluster, stalled_socket: Callable[[int, str], socket.socket]
) -> None:
    """A client that never reads stalls at its buffer bound and is ended when its socket has accepted
    nothing for the write timeout; 100 readers on the same worker get every event, promptly, and the
    worker's memory stays bounded."""
    (gateway,) = cluster(1, subscriber_max_bytes=65536, write_timeout=2)
    assert gateway.process is not None
    stalled_socket(gateway.port, STREAM)
    payload = "x" * 16_000
    cut_off = 'gateway_slow_subscriber_cutoffs_total{model="Todo",reason="write-timeout"} 1.0'
    limits = httpx.Limits(max_connections=150)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
        ready = asyncio.Semaphore(0)
        lateness: list[float] = []
        sent_at: dict[str, float] = {}

        async def reader() -> None:
            async with open_stream(http, STREAM) as stream:
                await stream.read_until(lambda s: s.parser.last_event_id != "")
                ready.release()
                while True:
                    await stream.read_until(lambda s: len(s.events) > 0, 60)
                    for event in stream.events:
                        key = json.loads(event.data)["data"]["title"][:8]
                        if key == "stop----":
                            return
                        lateness.append(time.monotonic() - sent_at[key])
                    stream.events.clear()

        rss_before = _rss_kb(gateway.process.pid)
        tasks = [asyncio.create_task(reader()) for _ in range(100)]
        for _ in range(100):
            await ready.acquire()
        writes = 0
        while writes < 2000:
            key = f"{writes:08d}"
            sent_at[key] = time.monotonic()
            assert (await http.post("/api/Todos", json={"title": key + payload})).status_code == 200
            writes += 1
            if writes % 25 == 0 and cut_off in (await http.get("/metrics")).text:
                break
        rss_after = _rss_kb(gateway.process.pid)
        await http.post("/api/Todos", json={"title": "stop----"})
        await asyncio.gather(*tasks)
        metrics = (await http.get("/metrics")).text
    assert cut_off in metrics, f"the stalled client was not cut off after {writes} events of 16 kB"
    assert len(lateness) == 100 * writes, "every reader got every event"
    assert max(lateness) < 10.0, "readers were held up"
    assert rss_after - rss_before < 80_000, "the worker buffered without bound"
