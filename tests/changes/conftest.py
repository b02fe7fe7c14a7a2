"""Fixtures and helpers for the change pipeline: a store (engine + Todo table + outbox + writes), relays,
brokers, gateway processes, and readers of what actually reached the stream and the outbox.

Everything runs against the real services: PostgreSQL (a database per test), the shared Redis (a key prefix
per test) or a private `redis-server` where a test stops it. Every factory closes what it made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import Gateway
from gateway.broker.base import Broker, Entry, Record
from gateway.broker.continuity import ZERO_OFFSET
from gateway.broker.factory import broker_from_url
from gateway.broker.redis import RedisBroker
from gateway.changes.outbox import outbox_table
from gateway.changes.relay import Relay, RelaySettings
from gateway.changes.writes import ModelWrites
from gateway.config import Settings
from gateway.database import create_engine, create_tables
from gateway.models.definition import ModelDef
from gateway.models.loader import load_registry
from gateway.models.tables import build_tables
from gateway.ops.metrics import PrometheusMetrics
from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.rest.conftest import serve_in_process
from tests.server import GatewayProcess

STREAM = "Todo"
DEADLINE = 20.0
"""Seconds any awaited condition may take; generous, since other test runs share the two cores."""

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll `probe` until it returns a truthy value, and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or probe!r} (last value {value!r})")
        await asyncio.sleep(interval)


async def stream_entries(broker: Broker, stream: str = STREAM) -> list[Entry]:
    """Every retained entry of `stream`, oldest first."""
    entries: list[Entry] = []
    after = ZERO_OFFSET
    while page := await broker.read(stream, after, 1000):
        entries += page
        after = page[-1].offset
    return entries


def ok(response: httpx.Response) -> Any:
    """The JSON body of a 200 reply."""
    assert response.status_code == 200, response.text
    return response.json()


def change_of(entry: Entry) -> dict[str, Any]:
    change: dict[str, Any] = orjson.loads(entry.change)
    return change


def before_of(entry: Entry) -> dict[str, Any] | None:
    return None if entry.before is None else dict(orjson.loads(entry.before))


def assert_once_each(entries: list[Entry], outbox_ids: list[int], *, in_order: bool = True) -> None:
    """The stream holds exactly the changes of `outbox_ids`, each once (and in outbox order: true whenever
    no two transactions committed out of id order)."""
    seen = [entry.outbox_id for entry in entries]
    duplicates = sorted({i for i in seen if seen.count(i) > 1})
    assert not duplicates, f"appended more than once: {duplicates}"
    missing = sorted(set(outbox_ids) - set(seen))
    assert not missing, f"never appended: {missing}"
    extra = sorted(set(seen) - set(outbox_ids))
    assert not extra, f"appended but not expected: {extra}"
    if in_order:
        assert seen == sorted(outbox_ids)


@dataclass
class OutboxRow:
    id: int
    stream: str
    change: dict[str, Any]
    published_at: float | None


@dataclass
class Store:
    """One model's table, the outbox and the writes, on one engine; no relay unless a test adds one."""

    model: ModelDef
    table: Table
    outbox: Table
    engine: AsyncEngine
    writes: ModelWrites

    async def outbox_rows(self) -> list[OutboxRow]:
        async with self.engine.connect() as connection:
            result = await connection.execute(select(self.outbox).order_by(self.outbox.c.id))
            return [
                OutboxRow(row.id, row.stream, orjson.loads(row.change), row.published_at) for row in result
            ]

    async def unpublished(self) -> list[int]:
        return [row.id for row in await self.outbox_rows() if row.published_at is None]

    async def all_published(self) -> bool:
        return await self.unpublished() == []

    async def rows(self) -> dict[Any, dict[str, Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(select(self.table))
            return {row._mapping[self.model.id_name]: dict(row._mapping) for row in result}


async def _no_wakeup(_stream: str, _records: Sequence[Record] = ()) -> None:
    return None


StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture
async def make_store() -> AsyncIterator[StoreFactory]:
    """A factory of stores on a given database URL (tables created); every engine is disposed after."""
    engines: list[AsyncEngine] = []

    async def make(
        database_url: str,
        committed: Callable[[str, Sequence[Record]], Awaitable[None]] = _no_wakeup,
        models: Path = EXAMPLE_MODELS,
    ) -> Store:
        registry = load_registry(models)
        tables = build_tables(registry)
        outbox = outbox_table(tables.metadata)
        engine = create_engine(database_url)
        engines.append(engine)
        await create_tables(engine, tables.metadata)
        model = registry.by_name[STREAM]
        table = tables.table(model)
        return Store(model, table, outbox, engine, ModelWrites(model, table, outbox, engine, committed))

    yield make
    for engine in engines:
        await engine.dispose()


@pytest.fixture
async def postgres_store(postgres_database: DatabaseFactory, make_store: StoreFactory) -> Store:
    """A store on a fresh PostgreSQL database; its writes wake nobody (tests drive relays themselves)."""
    return await make_store(await postgres_database())


RedisBrokerFactory = Callable[..., RedisBroker]


@pytest.fixture
async def make_redis_broker(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisBrokerFactory]:
    """RedisBrokers on the shared Redis under this test's prefix (or on `url`), all closed after the test."""
    made: list[RedisBroker] = []

    def make(url: str | None = None, *, prefix: str | None = None) -> RedisBroker:
        broker = broker_from_url(url or redis_url, prefix=prefix or redis_prefix, stream_maxlen=None)
        assert isinstance(broker, RedisBroker)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.aclose()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the shared Redis, to tamper with keys of this test's prefix (a lease, say)."""
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


RelayFactory = Callable[..., Relay]


@pytest.fixture
async def make_relay() -> AsyncIterator[RelayFactory]:
    """Started relays over a store and a broker; each is closed (leases released) after the test."""
    relays: list[Relay] = []

    def make(store: Store, broker: Broker, **settings: Any) -> Relay:
        options: dict[str, Any] = {"poll_interval": 0.2, "lease_ttl": 1.0} | settings
        relay = Relay(
            engine=store.engine,
            outbox=store.outbox,
            broker=broker,
            streams=[STREAM],
            settings=RelaySettings(**options),
            metrics=PrometheusMetrics(),
        )
        relays.append(relay)
        relay.start()
        return relay

    yield make
    for relay in relays:
        await relay.aclose()


async def has_lease(relay: Relay) -> bool:
    return STREAM in relay.leases


async def lost_lease(relay: Relay) -> bool:
    return STREAM not in relay.leases


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_processes(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Started `gateway serve` processes with the given GATEWAY_* environment; all killed after the test.

    Each logs to its own file in the test's directory (named in start errors)."""
    started: list[GatewayProcess] = []

    def start(env: dict[str, str]) -> GatewayProcess:
        process = GatewayProcess(env, log_path=tmp_path / f"gateway-{len(started)}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.kill()


@dataclass
class InProcess:
    """A gateway app served in this process (memory broker unless told otherwise) and a client of it."""

    client: httpx.AsyncClient
    gateway: Gateway

    @property
    def broker(self) -> Broker:
        return self.gateway.broker

    async def entries(self) -> list[Entry]:
        return await stream_entries(self.gateway.broker)

    async def outbox_count(self) -> int:
        async with self.gateway.engine.connect() as connection:
            return int(
                (await connection.execute(select(func.count()).select_from(self.gateway.outbox))).scalar_one()
            )

    async def unpublished(self) -> int:
        async with self.gateway.engine.connect() as connection:
            outbox = self.gateway.outbox
            query = select(func.count()).where(outbox.c.published_at.is_(None))
            return int((await connection.execute(query)).scalar_one())

    async def all_marked(self) -> None:
        """Wait until every outbox row is marked published (the mark follows the append)."""

        async def none_left() -> bool:
            return await self.unpublished() == 0

        await eventually(none_left, what="every outbox row is marked published")

    async def published(self, count: int) -> list[Entry]:
        """Wait until the stream holds at least `count` entries, and return them all."""

        async def enough() -> list[Entry] | None:
            entries = await self.entries()
            return entries if len(entries) >= count else None

        return await eventually(enough, what=f"{count} entries in the stream")


@asynccontextmanager
async def serve_gateway(**settings: Any) -> AsyncIterator[InProcess]:
    """Serve a gateway in this process (the example models, a 1 s lease unless told otherwise)."""
    options: dict[str, Any] = {"models": EXAMPLE_MODELS, "lease_ttl": 1.0} | settings
    async with serve_in_process(Settings(**options)) as (client, gateway):
        yield InProcess(client, gateway)


InProcessFactory = Callable[..., AbstractAsyncContextManager[InProcess]]


@pytest.fixture
def in_process(database_url: str) -> InProcessFactory:
    """Serve a gateway in this process on this test's database (both databases, in turn)."""

    def serve(**settings: Any) -> AbstractAsyncContextManager[InProcess]:
        return serve_gateway(database_url=database_url, **settings)

    return serve


ITEM_MODEL = {
    "name": "Item",
    "base": "PersistedModel",
    "idInjection": True,
    "forceId": False,
    "properties": {"name": {"type": "string", "required": True}, "rank": {"type": "number"}},
}


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    """The example Todo (generated ids, forceId) beside Item, whose ids clients may choose (so a duplicate
    id is a 409)."""
    directory = tmp_path / "models"
    directory.mkdir()
    for source in EXAMPLE_MODELS.glob("*.json"):
        (directory / source.name).write_bytes(source.read_bytes())
    (directory / "item.json").write_bytes(orjson.dumps(ITEM_MODEL))
    return directory
