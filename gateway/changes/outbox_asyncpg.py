"""The outbox's three hot statements on PostgreSQL, sent to asyncpg directly.

Every write inserts an outbox row, and the relay reads and marks each batch. Through SQLAlchemy's execution
layer each of these statements cost ~230 us of CPU against ~80 us sent straight to the driver (greenlet hop,
execution context, result wrapping), which made them most of what the outbox cost a write on a busy machine
(loadtests/RESULTS.md, Outbox). They run on the caller's connection, so inside its transaction, if any; a
driver error is raised as SQLAlchemy's `DBAPIError`, as it would be from any other statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.broker.base import Record


class OutboxStatements:
    """The SQL of one outbox table, built once (kept in the table's `info`)."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer
        name = quote.format_table(table)
        c = {column.name: quote.format_column(column) for column in table.c}
        self.insert = (
            f"INSERT INTO {name} ({c['stream']}, {c['change']}, {c['before']}, {c['committed_at']}) "
            "VALUES ($1, $2, $3, $4)"
        )
        self.pending = (
            f"SELECT {c['id']}, {c['change']}, {c['before']}, {c['committed_at']} FROM {name} "
            f"WHERE {c['stream']} = $1 AND {c['published_at']} IS NULL ORDER BY {c['id']} LIMIT $2"
        )
        self.mark = (
            f"UPDATE {name} SET {c['published_at']} = $1 "
            f"WHERE {c['id']} = ANY($2::bigint[]) AND {c['published_at']} IS NULL"
        )

    @classmethod
    def of(cls, table: Table, dialect: Dialect) -> OutboxStatements:
        statements: OutboxStatements | None = table.info.get("gateway_asyncpg")
        if statements is None:
            statements = table.info["gateway_asyncpg"] = cls(table, dialect)
        return statements


async def insert(
    connection: AsyncConnection, table: Table, rows: Sequence[tuple[str, bytes, bytes | None, float]]
) -> None:
    """Insert outbox rows inside the transaction `connection` is in (one round trip for any number)."""
    sql = OutboxStatements.of(table, connection.dialect).insert
    driver = await _driver(connection)
    if not driver.is_in_transaction():  # SQLAlchemy begins lazily: only a statement of its own starts it
        raise RuntimeError("outbox rows go in after the write's own statements, inside its transaction")
    with _translated(sql, rows):
        await driver.executemany(sql, rows)


async def pending(connection: AsyncConnection, table: Table, stream: str, limit: int) -> list[Record]:
    sql = OutboxStatements.of(table, connection.dialect).pending
    driver = await _driver(connection)
    with _translated(sql, (stream, limit)):
        rows = await driver.fetch(sql, stream, limit)
    return [Record(row[0], row[1], row[2], row[3]) for row in rows]


async def mark_published(connection: AsyncConnection, table: Table, ids: list[int], now: float) -> None:
    sql = OutboxStatements.of(table, connection.dialect).mark
    driver = await _driver(connection)
    with _translated(sql, (now, ids)):
        await driver.execute(sql, now, ids)


async def _driver(connection: AsyncConnection) -> Any:
    return (await connection.get_raw_connection()).driver_connection


@contextlib.contextmanager
def _translated(sql: str, params: Any) -> Iterator[None]:
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise DBAPIError(sql, params, exc, hide_parameters=True) from exc  # rows can be large
