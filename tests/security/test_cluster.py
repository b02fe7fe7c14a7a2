"""Tickets and limits across real gateway processes sharing PostgreSQL and Redis (one key prefix)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFactory
from tests.security.conftest import SECRET, bearer, make_token
from tests.server import GatewayProcess
from tests.sse.helpers import open_stream

STREAM = "/api/Notes/change-stream?_format=event-stream"
ALICE = bearer(make_token("alice"))


@pytest.fixture
async def two_gateways(
    postgres_database: DatabaseFactory, redis_url: str, redis_prefix: str, tmp_path: Path, models: Path
) -> AsyncIterator[Callable[..., list[GatewayProcess]]]:
    database_url = await postgres_database()
    with ExitStack() as stack:

        def start(**settings: Any) -> list[GatewayProcess]:
            env = {
                "GATEWAY_DATABASE_URL": database_url,
                "GATEWAY_BROKER_URL": redis_url,
                "GATEWAY_REDIS_PREFIX": redis_prefix,
                "GATEWAY_MODELS": str(models),
                "GATEWAY_DRAIN_SECONDS": "0.5",
                "GATEWAY_AUTH_JWT_SECRET": SECRET,
                **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
            }
            return [
                stack.enter_context(GatewayProcess(env, log_path=tmp_path / f"gateway-{n}.log"))
                for n in range(2)
            ]

        yield start


async def test_a_ticket_is_redeemed_once_on_any_worker_and_expires(
    two_gateways: Callable[..., list[GatewayProcess]],
) -> None:
    first, second = two_gateways(auth_ticket_ttl=2, limit_streams_per_principal=1)
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=10) as a,
        httpx.AsyncClient(base_url=second.url, timeout=10) as b,
    ):
        ticket = (await a.post("/auth/stream-ticket", json={"model": "Note"}, headers=ALICE)).json()["ticket"]
        async with open_stream(b, f"{STREAM}&ticket={ticket}") as stream:
            assert stream.response.status_code == 200
            await stream.read_until(lambda s: s.parser.last_event_id != "")
            for client in (a, b):
                again = await client.get(f"{STREAM}&ticket={ticket}")
                assert again.status_code == 401
                assert again.json()["error"]["code"] == "INVALID_TOKEN"
            # The open-streams limit is shared too: alice's one stream is on B, so A refuses another.
            refused = await a.get(STREAM, headers=ALICE)
            assert refused.status_code == 429
            await a.post("/api/Notes", json={"title": "seen on B"}, headers=ALICE)
            await stream.read_until(lambda s: len(s.data_events) >= 1, timeout=20)
        assert stream.changes()[0]["data"]["title"] == "seen on B"

        # The slot is given back when the stream ends (on whichever worker held it).
        deadline = time.monotonic() + 20
        while True:
            async with open_stream(a, STREAM, headers=ALICE) as retry:
                if retry.response.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the stream slot was never released"
            await asyncio.sleep(0.1)

        stale = (await a.post("/auth/stream-ticket", json={"model": "Note"}, headers=ALICE)).json()["ticket"]
        await asyncio.sleep(2.5)
        expired = await b.get(f"{STREAM}&ticket={stale}")
        assert expired.status_code == 401
