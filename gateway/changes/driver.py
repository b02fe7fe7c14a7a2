"""The database driver under a SQLAlchemy connection (asyncpg or aiosqlite), for the hot write statements.

Through SQLAlchemy's execution layer a statement costs its greenlet hop, execution context, compiled-cache
lookup and result wrapping: ~230 us of CPU on PostgreSQL against ~80 us sent straight to asyncpg, and on
SQLite several hops to aiosqlite's thread where the driver's `execute_fetchall` takes one
(loadtests/RESULTS.md, Outbox and issue 16). The hot statements (a create's INSERT, the outbox row, the
relay's read and mark) are sent here instead, on the caller's connection, so inside its transaction. A driver
error is raised as SQLAlchemy's `IntegrityError` (a constraint) or `DBAPIError` (anything else), as it would
be from any other statement.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.sqlite_driver import OneHopConnection


class MultiRowInsert(Protocol):
    def insert_rows(self, count: int) -> str:
        """`INSERT ... VALUES (...), (...)` for `count` rows."""


class Asyncpg:
    """Each statement one round trip; `insert_many` sends any number of rows in one (`executemany`)."""

    errors: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
    integrity_errors: tuple[type[BaseException], ...] = (asyncpg.IntegrityConstraintViolationError,)

    def __init__(self, adapted: Any) -> None:
        self.adapted = adapted  # SQLAlchemy's adapter, which owns the transaction
        self.driver = adapted.driver_connection

    def in_transaction(self) -> bool:
        return bool(self.driver.is_in_transaction())

    async def begin(self) -> None:
        """Start the transaction SQLAlchemy has begun but, lazily, not yet sent (it does so at its first
        statement, and here the first statement is the driver's)."""
        if self.adapted._transaction is None:
            await self.adapted._start_transaction()

    async def result_types(self, sql: str, _columns: int) -> list[Any]:
        """The type OID of each column `sql` returns (SQLAlchemy's result processors depend on them)."""
        prepared = await self.driver.prepare(sql)
        return [attribute.type.oid for attribute in prepared.get_attributes()]

    async def insert_many(self, statement: MultiRowInsert, rows: Sequence[Sequence[Any]], _per: int) -> None:
        await self.driver.executemany(statement.insert_rows(1), rows)

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        return list(await self.driver.fetch(sql, *params))

    async def execute(self, sql: str, *params: Any) -> None:
        await self.driver.execute(sql, *params)

    def ids(self, ids: list[int]) -> Any:
        return ids


class Aiosqlite:
    """Each statement one hop to aiosqlite's thread (`execute_fetchall` runs, fetches and closes there); a
    multi-row INSERT sends `per_statement` rows in one. aiosqlite raises `ValueError` for a closed
    connection, which SQLAlchemy treats as a driver error too."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, ValueError)
    integrity_errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)

    def __init__(self, adapted: Any) -> None:
        self.driver = adapted.driver_connection

    def in_transaction(self) -> bool:
        return bool(self.driver.in_transaction)

    async def begin(self) -> None:
        """Nothing to do: `gateway.database` sends BEGIN (IMMEDIATE) when SQLAlchemy begins."""

    async def result_types(self, _sql: str, columns: int) -> list[Any]:
        """None for each column: SQLite's result processors depend on the declared type alone."""
        return [None] * columns

    async def insert_many(self, statement: MultiRowInsert, rows: Sequence[Sequence[Any]], per: int) -> None:
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            sql = statement.insert_rows(len(chunk))
            await self.driver.execute_fetchall(sql, [value for row in chunk for value in row])

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        return list(await self.driver.execute_fetchall(sql, params))

    async def execute(self, sql: str, *params: Any) -> None:
        await self.driver.execute_fetchall(sql, params)

    async def execute_then_fetch(
        self, first: str, first_params: Sequence[Any], sql: str, params: Sequence[Any]
    ) -> list[Any]:
        """`first` (autocommitted on its own), then the rows of `sql`: one hop on a `OneHopConnection`."""
        if isinstance(self.driver, OneHopConnection):
            return await self.driver.run(_execute_then_fetch, first, first_params, sql, params)
        await self.driver.execute_fetchall(first, first_params)
        return list(await self.driver.execute_fetchall(sql, params))

    def ids(self, ids: list[int]) -> Any:
        return json.dumps(ids)


def _execute_then_fetch(
    connection: sqlite3.Connection, first: str, first_params: Sequence[Any], sql: str, params: Sequence[Any]
) -> list[Any]:
    """Runs on aiosqlite's thread."""
    connection.execute(first, first_params).close()
    cursor = connection.execute(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


Driver = Asyncpg | Aiosqlite

_DRIVERS: dict[str, type[Driver]] = {"asyncpg": Asyncpg, "aiosqlite": Aiosqlite}
"""The drivers of `gateway.config.DATABASE_SCHEMES`."""


async def driver_of(connection: AsyncConnection) -> Driver:
    """The driver of `connection`'s pooled DBAPI connection."""
    adapted = (await connection.get_raw_connection()).dbapi_connection
    return _DRIVERS[connection.dialect.driver](adapted)


@contextlib.contextmanager
def translated(driver: Driver, sql: str, params: Any) -> Iterator[None]:
    """Driver errors raised as SQLAlchemy's, parameters hidden (rows can be large)."""
    try:
        yield
    except driver.integrity_errors as exc:
        raise IntegrityError(sql, params, exc, hide_parameters=True) from exc
    except driver.errors as exc:
        raise DBAPIError(sql, params, exc, hide_parameters=True) from exc
