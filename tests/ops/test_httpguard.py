"""`gateway serve` facing clients directly: slow or oversized requests are answered and closed, streams are not.

A real `gateway serve` process with short deadlines; clients are raw sockets, so that a request can be
left incomplete on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import EXAMPLE_MODELS
from tests.server import GatewayProcess

SLOWLORIS = 300


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'guard.db'}",
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "GATEWAY_HEADER_TIMEOUT": "1",
        "GATEWAY_BODY_TIMEOUT": "1",
        "GATEWAY_MAX_HEADER_BYTES": "8192",
        "GATEWAY_MAX_HEADERS": "20",
        "GATEWAY_HEARTBEAT": "0.5",
    }
    with GatewayProcess(env, log_path=tmp_path / "gateway.log") as process:
        yield process


async def _answer(port: int, data: bytes, within: float = 30.0) -> bytes:
    """Send `data` and leave the request as it is; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /api/Todos HTTP/1.1\r\nHost: t\r\nX-Slow: ", b"408"),
        (
            b"POST /api/Todos HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            b"408",
        ),
        (b"GET /api/Todos HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (
            b"GET /api/Todos HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-%d: 1\r\n" % n for n in range(30))
            + b"\r\n",
            b"431",
        ),
        (b"GET /api/Todos?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", b"431"),
    ],
    ids=["headers-never-end", "body-never-ends", "one-huge-header", "too-many-headers", "huge-url"],
)
async def test_an_incomplete_or_oversized_request_is_answered_and_closed(
    gateway: GatewayProcess, request_bytes: bytes, status: bytes
) -> None:
    answer = await _answer(gateway.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b'"statusCode":' + status in answer


async def test_300_slowloris_connections_are_all_closed_and_health_stays_fast(
    gateway: GatewayProcess,
) -> None:
    async def dribble() -> bytes:
        return await _answer(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-a: b\r\n", within=60)

    started = time.monotonic()
    attackers = asyncio.gather(*(dribble() for _ in range(SLOWLORIS)))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        await asyncio.sleep(0.3)
        health = time.perf_counter()
        assert (await client.get("/healthz")).status_code == 200
        print(f"health during the attack: {(time.perf_counter() - health) * 1000:.1f} ms")
    answers = await attackers
    print(f"{SLOWLORIS} slowloris connections closed within {time.monotonic() - started:.1f} s")
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)


async def test_a_stream_outlives_the_deadlines(gateway: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(b"GET /api/Todos/change-stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(30):
            await reader.readuntil(b":ok\n")
            await asyncio.sleep(2.5)  # past both deadlines
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                assert (await client.post("/api/Todos", json={"title": "still here"})).status_code == 200
            await reader.readuntil(b"still here")
    finally:
        writer.close()


def test_the_guards_fields_and_the_pipeline_stay_small() -> None:
    """The guard's fields are slots (kept out of the instance dict that CPython shares between connections)
    and the pipeline is a list with uvicorn's `appendleft`/`pop` order."""
    from gateway.ops.httpguard import GuardedHttpToolsProtocol, Pipeline

    assert set(GuardedHttpToolsProtocol.__slots__) == {
        "_deadline",
        "_header_bytes",
        "_header_count",
        "_limits",
    }
    pipeline = Pipeline()
    pipeline.appendleft("first")
    pipeline.appendleft("second")
    assert pipeline.pop() == "first"
    assert pipeline
    assert pipeline.pop() == "second"
    assert not pipeline
