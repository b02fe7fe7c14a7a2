"""Shared fixtures: real PostgreSQL and Redis, isolated by name, cleaned up by whoever created them.

Every test that touches PostgreSQL gets a database of its own; every test that touches Redis gets a key prefix
of its own. Nothing is flushed or dropped that a test did not create, so parallel runs and leftovers never
interfere. A missing service fails loudly: these tests are never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, async_playwright

from tests.redis_server import RedisServers

POSTGRES_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
EXAMPLE_MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"

DatabaseFactory = Callable[[], Awaitable[str]]


def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def postgres_database() -> AsyncIterator[DatabaseFactory]:
    """A factory of fresh PostgreSQL databases (SQLAlchemy URLs); each is dropped after the test."""
    created: list[str] = []

    async def create() -> str:
        name = f"gwtest_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        created.append(name)
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{base}/{name}"

    yield create
    if created:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            for name in created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def sqlite_database(tmp_path: Path) -> DatabaseFactory:
    """A factory of fresh SQLite database files in the test's own directory."""

    async def create() -> str:
        return f"sqlite+aiosqlite:///{tmp_path / uuid.uuid4().hex[:8]}.db"

    return create


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest,
    sqlite_database: DatabaseFactory,
    postgres_database: DatabaseFactory,
) -> str:
    """One fresh database URL, for each supported database in turn."""
    factory = sqlite_database if request.param == "sqlite" else postgres_database
    return await factory()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"gwtest{uuid.uuid4().hex[:10]}"
    client = aioredis.from_url(redis_url)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise RuntimeError(f"Redis is not reachable at {redis_url}; start it (see .ci/run)") from exc
    yield prefix
    keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    """A factory of private redis-server processes (to stop, restart or flush), all stopped after the test."""
    with RedisServers(tmp_path) as servers:
        yield servers


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Debian's Chromium, headless; without the background-networking flags it dials out at every start."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium (Debian's package, installed by .ci/run), closed after the test."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
