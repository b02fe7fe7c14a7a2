"""The outbox's three hot statements, sent to the database driver directly (asyncpg or aiosqlite).

Every write inserts an outbox row, and the relay reads and marks each batch. Through SQLAlchemy's execution
layer each of these statements cost ~230 us of CPU on PostgreSQL against ~80 us sent straight to asyncpg
(greenlet hop, execution context, result wrapping); on SQLite each took several hops to aiosqlite's worker
thread (cursor, execute, fetch, close) where the driver's `execute_fetchall` takes one
(loadtests/RESULTS.md, Outbox). They run on the caller's connection, so inside its transaction, if any; a
driver error is raised as SQLAlchemy's `DBAPIError`, as it would be from any other statement.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.broker.base import Record

OutboxRow = tuple[str, bytes, bytes | None, float]
"""stream, change, before, committed_at"""

SQLITE_ROWS_PER_INSERT = 200
"""Rows per multi-row INSERT on SQLite: 4 bound parameters each, within the 999 of SQLite before 3.32."""


class OutboxStatements:
    """The SQL of one outbox table for one database, built once (kept in the table's `info`)."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer
        name = quote.format_table(table)
        c = {column.name: quote.format_column(column) for column in table.c}
        if dialect.name == "postgresql":
            p = ["$1", "$2", "$3", "$4"]
            in_ids = "= ANY($2::bigint[])"
        else:  # SQLite: the ids as one JSON array, so that one statement serves any number of them
            p = ["?"] * 4
            in_ids = "IN (SELECT value FROM json_each(?))"
        self.insert_into = (
            f"INSERT INTO {name} ({c['stream']}, {c['change']}, {c['before']}, {c['committed_at']}) VALUES "
        )
        self.values = f"({', '.join(p)})"
        self.insert = self.insert_into + self.values
        self.pending = (
            f"SELECT {c['id']}, {c['change']}, {c['before']}, {c['committed_at']} FROM {name} "
            f"WHERE {c['stream']} = {p[0]} AND {c['published_at']} IS NULL ORDER BY {c['id']} LIMIT {p[1]}"
        )
        self.mark = (
            f"UPDATE {name} SET {c['published_at']} = {p[0]} "
            f"WHERE {c['id']} {in_ids} AND {c['published_at']} IS NULL"
        )

    @classmethod
    def of(cls, table: Table, dialect: Dialect) -> OutboxStatements:
        key = f"gateway_outbox_sql_{dialect.name}"
        statements: OutboxStatements | None = table.info.get(key)
        if statements is None:
            statements = table.info[key] = cls(table, dialect)
        return statements


class _Asyncpg:
    """Each statement one round trip; `executemany` sends any number of rows in one."""

    errors: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def in_transaction(self) -> bool:
        return bool(self.driver.is_in_transaction())

    async def insert(self, statements: OutboxStatements, rows: Sequence[OutboxRow]) -> None:
        await self.driver.executemany(statements.insert, rows)

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        return list(await self.driver.fetch(sql, *params))

    async def execute(self, sql: str, *params: Any) -> None:
        await self.driver.execute(sql, *params)

    def ids(self, ids: list[int]) -> Any:
        return ids


class _Aiosqlite:
    """Each statement one hop to aiosqlite's thread (`execute_fetchall` runs, fetches and closes there); a
    multi-row INSERT sends up to `SQLITE_ROWS_PER_INSERT` rows in one. aiosqlite raises `ValueError` for a
    closed connection, which SQLAlchemy treats as a driver error too."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, ValueError)

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def in_transaction(self) -> bool:
        return bool(self.driver.in_transaction)

    async def insert(self, statements: OutboxStatements, rows: Sequence[OutboxRow]) -> None:
        for start in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
            chunk = rows[start : start + SQLITE_ROWS_PER_INSERT]
            sql = statements.insert_into + ", ".join([statements.values] * len(chunk))
            await self.driver.execute_fetchall(sql, [value for row in chunk for value in row])

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        return list(await self.driver.execute_fetchall(sql, params))

    async def execute(self, sql: str, *params: Any) -> None:
        await self.driver.execute_fetchall(sql, params)

    def ids(self, ids: list[int]) -> Any:
        return json.dumps(ids)


async def insert(connection: AsyncConnection, table: Table, rows: Sequence[OutboxRow]) -> None:
    """Insert outbox rows inside the transaction `connection` is in."""
    statements = OutboxStatements.of(table, connection.dialect)
    driver = await _driver(connection)
    if not driver.in_transaction():  # SQLAlchemy begins PostgreSQL's lazily: only a statement of its own does
        raise RuntimeError("outbox rows go in after the write's own statements, inside its transaction")
    with _translated(driver, statements.insert, rows):
        await driver.insert(statements, rows)


async def pending(connection: AsyncConnection, table: Table, stream: str, limit: int) -> list[Record]:
    sql = OutboxStatements.of(table, connection.dialect).pending
    driver = await _driver(connection)
    with _translated(driver, sql, (stream, limit)):
        rows = await driver.fetch(sql, stream, limit)
    return [Record(row[0], row[1], row[2], row[3]) for row in rows]


async def mark_published(connection: AsyncConnection, table: Table, ids: list[int], now: float) -> None:
    sql = OutboxStatements.of(table, connection.dialect).mark
    driver = await _driver(connection)
    with _translated(driver, sql, (now, ids)):
        await driver.execute(sql, now, driver.ids(ids))


_DRIVERS: dict[str, type[_Asyncpg | _Aiosqlite]] = {"asyncpg": _Asyncpg, "aiosqlite": _Aiosqlite}
"""The drivers of `gateway.config.DATABASE_SCHEMES`."""


async def _driver(connection: AsyncConnection) -> _Asyncpg | _Aiosqlite:
    raw = (await connection.get_raw_connection()).driver_connection
    return _DRIVERS[connection.dialect.driver](raw)


@contextlib.contextmanager
def _translated(driver: _Asyncpg | _Aiosqlite, sql: str, params: Any) -> Iterator[None]:
    try:
        yield
    except driver.errors as exc:
        raise DBAPIError(sql, params, exc, hide_parameters=True) from exc  # rows can be large
