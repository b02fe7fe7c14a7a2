"""A create on SQLite as one hop to aiosqlite's thread: BEGIN IMMEDIATE, each row's INSERT ... RETURNING, the
outbox rows, COMMIT, all in one function run there. It returns the outbox rows with their ids, which the relay
can then append without reading them back (`Relay.committed`).

A create through `write_transaction` makes three hops (BEGIN, the INSERT, the outbox row with the COMMIT
after it), and between hops the write lock is held while the event loop serves everyone else: with eight
concurrent writers queued for the one write lock, each waited out the others' hops as well as their
statements (loadtests/RESULTS.md, issue 16). Here the lock is held for the statements alone. The rows, their
change objects and outbox rows are built in that thread by the same functions as everywhere else
(`InsertStatement`, `to_json_row`, `changes.created`, `outbox_rows`), so what is stored and published is
byte for byte what the general path would store and publish.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.broker.base import Record
from gateway.changes import change as changes
from gateway.changes.outbox import outbox_rows
from gateway.changes.outbox_driver import SQLITE_ROWS_PER_INSERT, OutboxStatements
from gateway.changes.row_insert import InsertStatement
from gateway.database import pooled_driver, writer_turn
from gateway.models.definition import ModelDef
from gateway.models.rows import to_json_row
from gateway.sqlite_driver import OneHopConnection

Row = dict[str, Any]


class DuplicateRow(Exception):
    """A row's INSERT broke a constraint (its id is taken)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__("constraint failed")
        self.values = values


class Created(NamedTuple):
    rows: list[Row]
    """the rows as JSON"""
    records: list[Record]
    """their outbox rows as the relay reads them, ids included, for it to append without reading them"""


async def create(
    engine: AsyncEngine, model: ModelDef, table: Table, outbox: Table, values: Sequence[Mapping[str, Any]]
) -> Created:
    """Insert one row per `values` and their outbox rows in one transaction, all or none. Only for an
    engine that `gateway.database.uses_one_hop_driver`.

    Raises `DuplicateRow` for a constraint broken by a row, SQLAlchemy's `DBAPIError` for anything else the
    database refuses (the transaction is rolled back either way)."""
    statements = [InsertStatement.of(table, engine.dialect, tuple(row_values)) for row_values in values]
    for statement in statements:
        if statement.results is None:
            statement.set_result_types([None] * len(statement.names))
    outbox_sql = OutboxStatements.of(outbox, engine.dialect)
    async with writer_turn(engine), pooled_driver(engine) as driver:
        assert isinstance(driver, OneHopConnection)
        try:
            return await driver.run(_transaction, model, statements, values, outbox_sql)
        except (sqlite3.Error, ValueError) as exc:  # aiosqlite: ValueError for a closed connection
            raise DBAPIError.instance("create", (), exc, sqlite3.Error, hide_parameters=True) from exc


def _transaction(
    connection: sqlite3.Connection,
    model: ModelDef,
    statements: Sequence[InsertStatement],
    values: Sequence[Mapping[str, Any]],
    outbox_sql: OutboxStatements,
) -> Created:
    """Runs on aiosqlite's thread. The outbox ids of one multi-row INSERT are the `len(chunk)` ids up to its
    `lastrowid`: the table is AUTOINCREMENT and this transaction holds the write lock, so nothing else takes
    an id in between."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        rows = []
        for statement, row_values in zip(statements, values, strict=True):
            try:
                returned = connection.execute(statement.sql, statement.parameters(row_values)).fetchone()
            except sqlite3.IntegrityError:
                raise DuplicateRow(row_values) from None
            rows.append(to_json_row(model, statement.row(returned)))
        pending = outbox_rows(model.stream, [changes.created(model, row) for row in rows])
        records = []
        for start in range(0, len(pending), SQLITE_ROWS_PER_INSERT):
            chunk = pending[start : start + SQLITE_ROWS_PER_INSERT]
            cursor = connection.execute(
                outbox_sql.insert_rows(len(chunk)), [value for row in chunk for value in row]
            )
            first_id = cursor.lastrowid - len(chunk) + 1  # type: ignore[operator]
            records += [
                Record(first_id + n, change, before, committed_at)
                for n, (_stream, change, before, committed_at) in enumerate(chunk)
            ]
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return Created(rows, records)
