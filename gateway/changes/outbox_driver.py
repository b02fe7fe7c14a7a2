"""The outbox's three hot statements, sent to the database driver directly (`gateway.changes.driver`).

Every write inserts an outbox row, and the relay reads and marks each batch. They run on the caller's
connection, so inside its transaction, if any.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.broker.base import Record
from gateway.changes.driver import Asyncpg, driver_of, translated

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
        # PostgreSQL: the mark and the read in one statement, so one round trip. Its SELECT sees the table
        # as it was before the statement (the marked rows still pending), hence the ids left out by hand.
        self.mark_then_pending = (
            f"WITH marked AS (UPDATE {name} SET {c['published_at']} = $3 "
            f"WHERE {c['id']} = ANY($4::bigint[]) AND {c['published_at']} IS NULL) "
            f"SELECT {c['id']}, {c['change']}, {c['before']}, {c['committed_at']} FROM {name} "
            f"WHERE {c['stream']} = $1 AND {c['published_at']} IS NULL AND {c['id']} <> ALL($4::bigint[]) "
            f"ORDER BY {c['id']} LIMIT $2"
        )

    def insert_rows(self, count: int) -> str:
        """One INSERT of `count` rows (at most `SQLITE_ROWS_PER_INSERT` on SQLite)."""
        return self.insert_into + ", ".join([self.values] * count)

    @classmethod
    def of(cls, table: Table, dialect: Dialect) -> OutboxStatements:
        key = f"gateway_outbox_sql_{dialect.name}"
        statements: OutboxStatements | None = table.info.get(key)
        if statements is None:
            statements = table.info[key] = cls(table, dialect)
        return statements


async def insert(connection: AsyncConnection, table: Table, rows: Sequence[OutboxRow]) -> None:
    """Insert outbox rows inside the transaction `connection` is in."""
    statements = OutboxStatements.of(table, connection.dialect)
    driver = await driver_of(connection)
    if not driver.in_transaction():  # SQLAlchemy begins PostgreSQL's lazily: only a statement of its own does
        raise RuntimeError("outbox rows go in after the write's own statements, inside its transaction")
    with translated(driver, statements.insert, rows):
        await driver.insert_many(statements, rows, SQLITE_ROWS_PER_INSERT)


async def pending(
    connection: AsyncConnection, table: Table, stream: str, limit: int, marking: list[int], now: float
) -> list[Record]:
    """Mark the rows `marking` published, then read the pending rows of `stream`: one round trip (one hop
    on SQLite's one-hop driver). Each statement is atomic on its own, as the relay needs."""
    statements = OutboxStatements.of(table, connection.dialect)
    driver = await driver_of(connection)
    if not marking:
        with translated(driver, statements.pending, (stream, limit)):
            rows = await driver.fetch(statements.pending, stream, limit)
    elif isinstance(driver, Asyncpg):
        with translated(driver, statements.mark_then_pending, (stream, limit, now, marking)):
            rows = await driver.fetch(statements.mark_then_pending, stream, limit, now, marking)
    else:
        with translated(driver, statements.mark, (now, marking)):
            rows = await driver.execute_then_fetch(
                statements.mark, (now, driver.ids(marking)), statements.pending, (stream, limit)
            )
    return [Record(row[0], row[1], row[2], row[3]) for row in rows]


async def mark_published(connection: AsyncConnection, table: Table, ids: list[int], now: float) -> None:
    sql = OutboxStatements.of(table, connection.dialect).mark
    driver = await driver_of(connection)
    with translated(driver, sql, (now, ids)):
        await driver.execute(sql, now, driver.ids(ids))
