"""Ordinary overload on one worker with Redis: many concurrent reads, many streams of one principal.

redis-py's default pool raised at once past 100 connections: replies lost their `X-Change-Stream-Position`
without a word, and stream slots were never given back. These run a real `gateway serve` process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.broker.factory import PoolLimits, broker_from_url
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS
from tests.redis_server import RedisServers
from tests.rest.conftest import serve_in_process
from tests.server import GatewayProcess

READS = 1_000
STREAMS = 2_000


@pytest.fixture
def redis_gateway(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'overload.db'}",
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_LIMIT_STREAMS_PER_PRINCIPAL": str(STREAMS + 100),
    }
    with GatewayProcess(env, log_path=tmp_path / "gateway.log") as process:
        yield process


async def test_every_one_of_1000_concurrent_reads_carries_its_position(redis_gateway: GatewayProcess) -> None:
    limits = httpx.Limits(max_connections=READS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=redis_gateway.url, limits=limits, timeout=120) as client:
        replies = await asyncio.gather(*(client.get("/api/Todos/count") for _ in range(READS)))
    statuses = {reply.status_code for reply in replies}
    assert statuses == {200}
    missing = [reply for reply in replies if "x-change-stream-position" not in reply.headers]
    assert not missing, f"{len(missing)} of {READS} replies carry no position"


async def _open_stream(port: int) -> asyncio.StreamWriter:
    """A raw SSE connection, once the stream has started (`:ok` read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/Todos/change-stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b":ok\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return writer


async def test_2000_streams_of_one_principal_give_their_slots_back(
    redis_gateway: GatewayProcess, redis_url: str, redis_prefix: str
) -> None:
    semaphore = asyncio.Semaphore(200)  # open them quickly, without a SYN flood against the listen backlog

    async def open_one() -> asyncio.StreamWriter:
        async with semaphore:
            return await asyncio.wait_for(_open_stream(redis_gateway.port), 60)

    store = aioredis.from_url(redis_url)

    async def held() -> int:
        keys = [key async for key in store.scan_iter(match=f"{redis_prefix}:sec:streams:*")]
        return sum([await store.zcard(key) for key in keys])

    writers: list[asyncio.StreamWriter] = []
    try:
        writers = await asyncio.gather(*(open_one() for _ in range(STREAMS)))
        assert await held() == STREAMS
        for writer in writers:
            writer.close()
        dropped = time.monotonic()
        while await held() and time.monotonic() - dropped < 30:
            await asyncio.sleep(0.05)
        assert await held() == 0
        print(f"{STREAMS} slots back to 0 in {time.monotonic() - dropped:.2f} s")
        async with httpx.AsyncClient(base_url=redis_gateway.url, timeout=30) as client:
            assert (await client.get("/readyz")).status_code == 200
    finally:
        for writer in writers:
            writer.close()
        await store.aclose()


def _private_redis_settings(tmp_path: Path, redis_url: str, redis_prefix: str) -> Settings:
    """An in-process gateway on SQLite and a private Redis (which a test may stop or inspect)."""
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        models=EXAMPLE_MODELS,
        broker_url=redis_url,
        redis_prefix=redis_prefix,
    )


async def test_concurrent_reads_share_their_request_for_the_position(
    tmp_path: Path, redis_servers: RedisServers, redis_prefix: str
) -> None:
    """The position of 200 reads sent together is asked of a private Redis far fewer than 200 times (each
    read asked for its own before, and a burst queued past the pool's timeout on a busy box)."""
    server = redis_servers.start()
    settings = _private_redis_settings(tmp_path, server.url, redis_prefix)
    store = aioredis.from_url(server.url)

    async def scripts_run() -> int:
        stats = await store.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    try:
        async with serve_in_process(settings) as (client, _gateway):
            await client.get("/api/Todos/count")  # the script is loaded
            before = await scripts_run()
            replies = await asyncio.gather(*(client.get("/api/Todos/count") for _ in range(200)))
            asked = await scripts_run() - before
    finally:
        await store.aclose()
    assert all(reply.status_code == 200 for reply in replies)
    assert all("x-change-stream-position" in reply.headers for reply in replies)
    assert asked < 50, f"{asked} requests for the position of 200 reads"


async def test_a_read_whose_position_redis_cannot_give_is_a_loud_503(
    tmp_path: Path, redis_servers: RedisServers, redis_prefix: str
) -> None:
    server = redis_servers.start()
    settings = _private_redis_settings(tmp_path, server.url, redis_prefix)
    async with serve_in_process(settings) as (client, gateway):
        assert "x-change-stream-position" in (await client.get("/api/Todos")).headers
        server.stop()
        for route in ("/api/Todos", "/api/Todos/count", "/api/Todos/findOne"):
            reply = await client.get(route)
            assert reply.status_code == 503, route
            assert reply.headers["retry-after"] == "2"
            assert reply.json()["error"]["statusCode"] == 503
        assert (await client.post("/api/Todos", json={"title": "still written"})).status_code == 200
        unavailable = gateway.metrics.registry.get_sample_value(
            "gateway_broker_unavailable_total", {"operation": "position"}
        )
        assert unavailable == 3


async def test_a_redis_cluster_pool_waits_for_a_free_connection_instead_of_failing(
    redis_servers: RedisServers, redis_prefix: str
) -> None:
    """redis-py's cluster pool raises `MaxConnectionsError` at once when a node's connections are taken;
    the gateway's waits (up to the pool timeout), so 200 concurrent reads through 4 connections all answer."""
    nodes = redis_servers.cluster(masters=3)
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes)
    broker = broker_from_url(url, prefix=redis_prefix, pool=PoolLimits(max_connections=4, timeout=10))
    try:
        heads = await asyncio.gather(*(broker.head("todos") for _ in range(200)))
        assert len(heads) == 200
        assert len({head.epoch for head in heads}) == 1
    finally:
        await broker.aclose()


SLOTS = 40


@pytest.fixture
def small_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'slots.db'}",
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "GATEWAY_MAX_CONNECTIONS": str(SLOTS),
        "GATEWAY_HEADER_TIMEOUT": "120",  # far longer than the test: only the slots can close them
    }
    with GatewayProcess(env, log_path=tmp_path / "gateway.log") as process:
        yield process


async def test_slowloris_connections_count_toward_max_connections_and_never_keep_a_client_out(
    small_gateway: GatewayProcess,
) -> None:
    """Incomplete requests share GATEWAY_MAX_CONNECTIONS with the streams: a new connection at the limit
    closes the oldest incomplete one (408), so SLOTS + 10 dribbling clients lose 10 at once (not after the
    header timeout), and a client that sends its request whole is served, its stream included."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(SLOTS + 10):
            reader, writer = await asyncio.open_connection("127.0.0.1", small_gateway.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-a: b\r\n")
            await writer.drain()
            opened.append((reader, writer))
        started = time.monotonic()
        async with asyncio.timeout(20):
            evicted = [await reader.read() for reader, _ in opened[:10]]
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in evicted), evicted[:2]
        print(f"10 slowloris past {SLOTS} slots closed in {time.monotonic() - started:.2f} s")
        async with httpx.AsyncClient(base_url=small_gateway.url, timeout=20) as client:
            assert (await client.get("/healthz")).status_code == 200
        stream = await asyncio.wait_for(_open_stream(small_gateway.port), 20)
        stream.close()
    finally:
        for _, writer in opened:
            writer.close()
