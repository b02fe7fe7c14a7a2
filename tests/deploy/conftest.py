"""A deployment per test: one PostgreSQL database (migrated by `gateway migrate`, as the compose file and the
Kubernetes Job do), one Redis prefix, and factories for gunicorn instances and nginx in the test's directory."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway.broker.base import Broker, Entry
from gateway.broker.continuity import ZERO_OFFSET
from gateway.broker.factory import broker_from_url
from gateway.changes.outbox import OUTBOX_TABLE
from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.deploy.harness import GunicornInstance, Nginx, clean_environ
from tests.server import ROOT

STREAM = "Todo"


@dataclass
class Deployment:
    """Everything the instances of one test share, and factories for them."""

    directory: Path
    env: dict[str, str]
    broker: Broker
    database_url: str
    started: list[GunicornInstance] = field(default_factory=list)
    proxies: list[Nginx] = field(default_factory=list)

    def instance(self, name: str, *, workers: int = 2, **settings: str) -> GunicornInstance:
        env = {**self.env, **{f"GATEWAY_{key.upper()}": value for key, value in settings.items()}}
        instance = GunicornInstance(env, directory=self.directory / name, workers=workers, name=name)
        self.started.append(instance)
        return instance

    def nginx(self, upstreams: list[str], *, extra_locations: str = "") -> Nginx:
        proxy = Nginx(
            self.directory / f"nginx{len(self.proxies)}", upstreams, extra_locations=extra_locations
        )
        self.proxies.append(proxy)
        return proxy

    async def unpublished(self) -> int:
        """Committed changes the relays have not appended to the stream yet."""
        connection = await asyncpg.connect(
            self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        )
        try:
            return int(
                await connection.fetchval(f"SELECT count(*) FROM {OUTBOX_TABLE} WHERE published_at IS NULL")
            )
        finally:
            await connection.close()

    async def stream_entries(self) -> list[Entry]:
        """The whole Todo stream, oldest first: what every follower must have received, exactly."""
        entries: list[Entry] = []
        cursor = ZERO_OFFSET
        while True:
            batch = await self.broker.read(STREAM, cursor, 1000)
            if not batch:
                return entries
            entries.extend(batch)
            cursor = batch[-1].offset


@pytest.fixture
async def deployment(
    postgres_database: DatabaseFactory, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    database_url = await postgres_database()
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "GATEWAY_CREATE_TABLES": "false",
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_DRAIN_SECONDS": "3",
        "GATEWAY_RETRY": "400",
        "GATEWAY_LEASE_TTL": "2",
    }
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "migrate",
        env={**clean_environ(), **env},
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        _, stderr = await migrate.communicate()
    assert migrate.returncode == 0, stderr.decode()
    broker = broker_from_url(redis_url, prefix=redis_prefix)
    deployment = Deployment(tmp_path, env, broker, database_url)
    try:
        yield deployment
    finally:
        for proxy in deployment.proxies:
            proxy.stop()
        for instance in deployment.started:
            instance.close()
        await broker.aclose()


async def write_todo(http: httpx.AsyncClient, base_url: str, title: str) -> int | None:
    """POST one Todo; its id, or None if the write failed (the caller decides whether that matters)."""
    try:
        response = await http.post(f"{base_url}/api/Todos", json={"title": title})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return int(response.json()["id"])
