"""The transactional outbox: each change is inserted in the same transaction as the row it describes.

A change is published only from here, by the relay, so a rolled-back write can never publish (nothing to
read) and a committed one can never be lost (the row stays until it is marked published, whatever crashes).

Rows are selected by `published_at IS NULL`, not by "id greater than the last one published": ids are taken
before commit, so a transaction holding a smaller id may commit after a larger one was published, and a
high-water mark would skip it for ever (STACK-NOTES, outbox). Order per record still holds: two writes to one
row are serialised by the row lock, so the second takes its outbox id after the first has committed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.broker.base import Record
from gateway.changes import outbox_asyncpg
from gateway.changes.change import Change

OUTBOX_TABLE = "gateway_outbox"


def outbox_table(metadata: MetaData) -> Table:
    """Define the outbox in `metadata` (the models' metadata, so one `create_all` makes everything)."""
    unpublished = Column("published_at", Double, nullable=True)
    table = Table(
        OUTBOX_TABLE,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("stream", String(255), nullable=False),
        Column("change", LargeBinary, nullable=False),
        Column("before", LargeBinary, nullable=True),
        Column("committed_at", Double, nullable=False),
        unpublished,
        sqlite_autoincrement=True,
    )
    Index(
        "gateway_outbox_pending",
        table.c.stream,
        table.c.id,
        postgresql_where=unpublished.is_(None),
        sqlite_where=unpublished.is_(None),
    )
    # For the retention sweep only. Partial, so that the insert of every write adds no entry to it: the
    # sweep's `published_at < t` implies NOT NULL, which PostgreSQL and SQLite both use to pick it.
    Index(
        "gateway_outbox_published",
        table.c.published_at,
        postgresql_where=unpublished.is_not(None),
        sqlite_where=unpublished.is_not(None),
    )
    return table


async def record_changes(
    connection: AsyncConnection, table: Table, stream: str, changes: Sequence[Change]
) -> None:
    """Insert `changes` into the outbox inside the caller's transaction, in order."""
    if not changes:
        return
    now = time.time()
    if _is_postgresql(connection):
        rows = [(stream, change.encode(), change.encode_before(), now) for change in changes]
        await outbox_asyncpg.insert(connection, table, rows)
        return
    await connection.execute(
        insert(table),
        [
            {
                "stream": stream,
                "change": change.encode(),
                "before": change.encode_before(),
                "committed_at": now,
            }
            for change in changes
        ],
    )


async def pending(connection: AsyncConnection, table: Table, stream: str, limit: int) -> list[Record]:
    """The oldest unpublished changes of `stream`, in outbox order."""
    if _is_postgresql(connection):
        return await outbox_asyncpg.pending(connection, table, stream, limit)
    rows = await connection.execute(_pending_query(table), {"stream": stream, "limit": limit})
    return [Record(row.id, bytes(row.change), _bytes(row.before), row.committed_at) for row in rows]


async def mark_published(connection: AsyncConnection, table: Table, outbox_ids: Sequence[int]) -> None:
    if not outbox_ids:
        return
    if _is_postgresql(connection):
        await outbox_asyncpg.mark_published(connection, table, list(outbox_ids), time.time())
        return
    await connection.execute(_mark_query(table), {"ids": list(outbox_ids), "now": time.time()})


def _is_postgresql(connection: AsyncConnection) -> bool:
    """PostgreSQL runs the hot statements on asyncpg directly (`outbox_asyncpg`); SQLite, with no round trips
    to save, keeps SQLAlchemy's."""
    return connection.dialect.name == "postgresql"


# On SQLite the relay runs these two for every batch. Built once per table and kept in its `info` (not in a
# global cache), they cost no SQL construction per batch: building `id IN (...)` with one bound parameter per
# id took a fifth of the relay's time.


def _pending_query(table: Table) -> Select[Any]:
    query: Select[Any] | None = table.info.get("gateway_pending")
    if query is None:
        built: Select[Any] = (
            select(table.c.id, table.c.change, table.c.before, table.c.committed_at)
            .where(table.c.stream == bindparam("stream"), table.c.published_at.is_(None))
            .order_by(table.c.id)
            .limit(bindparam("limit", type_=Integer))
        )
        query = table.info["gateway_pending"] = built
    return query


def _mark_query(table: Table) -> Update:
    query: Update | None = table.info.get("gateway_mark_published")
    if query is None:
        query = (
            update(table)
            .where(table.c.id.in_(bindparam("ids", expanding=True)), table.c.published_at.is_(None))
            .values(published_at=bindparam("now", type_=Double))
        )
        table.info["gateway_mark_published"] = query
    return query


async def backlog(connection: AsyncConnection, table: Table) -> int:
    """How many committed changes wait to be published, across all streams."""
    result = await connection.execute(select(func.count()).where(table.c.published_at.is_(None)))
    return int(result.scalar_one())


async def delete_published(connection: AsyncConnection, table: Table, older_than: float) -> int:
    """Drop rows published before `older_than` (Unix time); they are in the stream now."""
    result = await connection.execute(delete(table).where(table.c.published_at < older_than))
    return int(result.rowcount or 0)


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
