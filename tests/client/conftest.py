"""Fixtures for the change-stream clients: real `gateway serve` subprocesses on Redis, and their brokers.

Every gateway gets the test's own database and Redis key prefix (or a private redis-server), short retry,
drain and lease timings so that restarts are quick, and is stopped after the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import pytest

from gateway.broker.base import Broker
from gateway.broker.factory import broker_from_url
from tests.conftest import EXAMPLE_MODELS
from tests.server import GatewayProcess

FAST_ENV = {
    "GATEWAY_MODELS": str(EXAMPLE_MODELS),
    "GATEWAY_RETRY": "100",  # ms: clients reconnect quickly after a restart
    "GATEWAY_DRAIN_SECONDS": "0.5",
    "GATEWAY_LEASE_TTL": "1",  # a killed relay's lease is taken over within a second
    "GATEWAY_RELAY_POLL_INTERVAL": "0.2",
    "GATEWAY_HEARTBEAT": "2",
    "GATEWAY_BOOKMARK_INTERVAL": "0.5",
}


class GatewayFactory(Protocol):
    async def __call__(
        self, *, redis_url: str, prefix: str, database_url: str | None = None, **env: str
    ) -> GatewayProcess: ...


@pytest.fixture
async def gateways(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """A factory of started gateway processes (SQLite in the test's directory unless `database_url` is
    given; `env` adds `GATEWAY_*` settings); every one is killed after the test."""
    started: list[GatewayProcess] = []

    async def start(
        *, redis_url: str, prefix: str, database_url: str | None = None, **env: str
    ) -> GatewayProcess:
        name = uuid.uuid4().hex[:8]
        database = database_url or f"sqlite+aiosqlite:///{tmp_path / name}.db"
        process = GatewayProcess(
            {
                **FAST_ENV,
                "GATEWAY_DATABASE_URL": database,
                "GATEWAY_BROKER_URL": redis_url,
                "GATEWAY_REDIS_PREFIX": prefix,
                **env,
            },
            log_path=tmp_path / f"gateway-{name}.log",
        )
        started.append(process)
        await asyncio.to_thread(process.start, 60.0)
        return process

    yield start
    for process in started:
        await asyncio.to_thread(process.kill)


BrokerFactory = Callable[..., Broker]


@pytest.fixture
async def brokers() -> AsyncIterator[BrokerFactory]:
    """A factory of brokers (`broker_from_url` arguments), all closed after the test."""
    made: list[Broker] = []

    def make(url: str, *, prefix: str, stream_maxlen: int | None = 100_000) -> Broker:
        broker = broker_from_url(url, prefix=prefix, stream_maxlen=stream_maxlen)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.aclose()
