"""SQLite's writers queue in the process: one write transaction at a time holds a connection, the others wait
their turn in FIFO order (woken, never sleeping in SQLite's busy handler), and nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.changes.outbox import outbox_table
from gateway.database import create_engine, create_tables, pooled_driver, write_transaction, writer_turn
from gateway.models.loader import load_registry
from gateway.models.tables import build_tables
from gateway.sqlite_driver import OneHopConnection
from tests.conftest import EXAMPLE_MODELS, POSTGRES_ADMIN_URL, DatabaseFactory

WRITERS = 8


@pytest.fixture
async def sqlite_engine(sqlite_database: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    """A SQLite engine whose connections give up at once on a taken write lock (busy timeout 0), so a writer
    that reached SQLite's lock instead of the process's queue fails instead of sleeping."""
    engine = create_engine(await sqlite_database())

    @event.listens_for(engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE log (writer INTEGER NOT NULL)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_concurrent_sqlite_writers_take_turns_without_the_busy_handler(
    sqlite_engine: AsyncEngine,
) -> None:
    holding: list[int] = []

    async def write(writer: int) -> None:
        async with write_transaction(sqlite_engine) as connection:
            holding.append(sqlite_engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]
            await connection.execute(text("INSERT INTO log (writer) VALUES (:w)"), {"w": writer})
            await asyncio.sleep(0.01)  # hold the lock across a yield, so the others are really waiting

    await asyncio.gather(*(write(w) for w in range(WRITERS)))

    async with sqlite_engine.connect() as connection:
        order = [row[0] for row in await connection.execute(text("SELECT writer FROM log ORDER BY rowid"))]
    assert order == list(range(WRITERS))  # every write landed, in the order the writers queued
    assert holding == [1] * WRITERS  # the waiting writers held no connection (none waited in SQLite)


async def test_a_writer_turn_outside_a_transaction_queues_with_the_transactions(
    sqlite_engine: AsyncEngine,
) -> None:
    """The relay marks published rows in a statement of its own: it queues with the writers, too."""
    events: list[str] = []

    async def transaction() -> None:
        async with write_transaction(sqlite_engine) as connection:
            await connection.execute(text("INSERT INTO log (writer) VALUES (1)"))
            await asyncio.sleep(0.02)
            events.append("transaction")

    async def statement() -> None:
        async with writer_turn(sqlite_engine), sqlite_engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            await driver.execute_fetchall("INSERT INTO log (writer) VALUES (2)")  # autocommits
            events.append("statement")

    first = asyncio.create_task(transaction())
    await asyncio.sleep(0)
    await asyncio.gather(first, statement())
    assert events == ["transaction", "statement"]


async def test_postgresql_writers_do_not_queue(postgres_database: DatabaseFactory) -> None:
    engine = create_engine(await postgres_database())
    try:
        async with writer_turn(engine), writer_turn(engine):  # no queue: the second turn is granted at once
            pass
    finally:
        await engine.dispose()


async def test_postgresql_connections_the_server_closed_are_replaced_before_use(
    postgres_database: DatabaseFactory,
) -> None:
    """Without a pre-ping per checkout, pooled connections that the server ended (a restart, a failover, an
    administrator) are still never used for a write: the first writes after it succeed, one alone and four at
    once (their BEGIN finds the connection broken), and once the event loop has seen the connections close
    (checkout does). CI saw a lone write fail after two ended connections in a row."""
    engine = create_engine(await postgres_database())
    database = engine.url.database
    try:
        async with write_transaction(engine) as connection:
            await connection.execute(text("CREATE TABLE log (writer INTEGER NOT NULL)"))

        async def write(writer: int) -> None:
            async with write_transaction(engine) as connection:
                await connection.execute(text("INSERT INTO log VALUES (:w)"), {"w": writer})
                await asyncio.sleep(0.01)  # held a moment, so that the pool opens several connections

        await asyncio.gather(*(write(writer) for writer in range(4)))
        for wait_until_gone in (False, True):
            admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
            try:
                ended = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1"
                assert await admin.fetchval(ended, database) >= 2
                left = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                while wait_until_gone and await admin.fetchval(left, database):
                    await asyncio.sleep(0.01)
            finally:
                await admin.close()
            await write(-1)  # alone: every connection it is offered may be one of the four ended
            await asyncio.gather(*(write(writer) for writer in range(4)))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM log"))).scalar_one() == 14
    finally:
        await engine.dispose()


async def test_workers_creating_the_tables_of_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Seen with two gunicorn workers: one failed to boot with "database is locked", first from a deferred
    transaction that read the schema before the other's tables were written (it cannot take the write lock),
    then from two connections switching the new file to WAL together (one in five runs of six engines)."""
    registry = load_registry(EXAMPLE_MODELS)
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    for _ in range(15):
        for name in ("new.db", "new.db-wal", "new.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        workers = [create_engine(url) for _ in range(6)]
        metadatas = [build_tables(registry).metadata for _ in workers]
        for metadata in metadatas:
            outbox_table(metadata)
        try:
            await asyncio.gather(*(create_tables(e, m) for e, m in zip(workers, metadatas, strict=True)))
        finally:
            for engine in workers:
                await engine.dispose()


async def test_a_driver_connection_taken_from_the_pool_goes_back_whatever_happens(
    sqlite_database: DatabaseFactory,
) -> None:
    engine = create_engine(await sqlite_database())
    try:
        async with pooled_driver(engine) as driver:
            assert isinstance(driver, OneHopConnection)

        async def fail_inside() -> None:
            async with pooled_driver(engine) as again:
                assert again is driver  # the one pooled connection, not a new one
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await fail_inside()
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
