"""The one-hop SQLite driver behind SQLAlchemy: results, row counts and errors as aiosqlite's, and each
statement one trip to the connection's thread (none to reset a connection that has committed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import create_engine, write_transaction
from gateway.sqlite_driver import OneHopConnection
from tests.conftest import DatabaseFactory


@pytest.fixture
async def engine(sqlite_database: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(await sqlite_database())
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_rows_counts_and_ids_come_back_from_one_hop(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as connection:
        inserted = await connection.execute(
            text("INSERT INTO item (name) VALUES ('a'), ('b') RETURNING id, name")
        )
        assert [tuple(row) for row in inserted] == [(1, "a"), (2, "b")]
        await connection.execute(
            text("INSERT INTO item (name) VALUES (:name)"), [{"name": "c"}, {"name": "d"}]
        )
        updated = await connection.execute(text("UPDATE item SET name = name || '!' WHERE id > 2"))
        assert updated.rowcount == 2
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM item ORDER BY id"))).scalars().all()
        assert names == ["a", "b", "c!", "d!"]
        first = (await connection.execute(text("SELECT name FROM item ORDER BY id"))).first()
        assert first is not None
        assert first[0] == "a"


async def test_a_constraint_error_is_sqlalchemys_and_rolls_the_transaction_back(engine: AsyncEngine) -> None:
    async def insert_twice() -> None:
        async with write_transaction(engine) as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('x')"))
            await connection.execute(text("INSERT INTO item (name) VALUES ('x')"))

    with pytest.raises(IntegrityError):
        await insert_twice()
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0


async def test_each_statement_is_one_trip_to_the_thread(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = 0
    real = OneHopConnection._execute

    async def counted(self: OneHopConnection, function: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await real(self, function, *args, **kwargs)  # type: ignore[no-untyped-call]

    async with write_transaction(engine) as connection:  # the pool's connection is open and warm
        await connection.execute(text("SELECT 1"))
    monkeypatch.setattr(OneHopConnection, "_execute", counted)
    async with write_transaction(engine) as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('y') RETURNING id"))
    assert (
        trips == 3
    )  # BEGIN IMMEDIATE, the INSERT with its rows, COMMIT (aiosqlite's cursors and the pool's reset took 10)


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        await driver.execute_fetchall("BEGIN")
        await driver.execute_fetchall("INSERT INTO item (name) VALUES ('left open')")
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert not driver.in_transaction
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0
