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

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.broker.base import Record
from gateway.changes import outbox_driver
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
    if changes:
        await outbox_driver.insert(connection, table, outbox_rows(stream, changes))


def outbox_rows(stream: str, changes: Sequence[Change]) -> list[outbox_driver.OutboxRow]:
    """The outbox rows of `changes`, each encoded once, committed now."""
    now = time.time()
    return [(stream, change.encode(), change.encode_before(), now) for change in changes]


async def pending(
    connection: AsyncConnection, table: Table, stream: str, limit: int, *, marking: Sequence[int] = ()
) -> list[Record]:
    """The oldest unpublished changes of `stream`, in outbox order, after marking the rows `marking` as
    published (the relay's previous batch: its mark rides with the next read, in the same round trip)."""
    return await outbox_driver.pending(connection, table, stream, limit, list(marking), time.time())


async def mark_published(connection: AsyncConnection, table: Table, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await outbox_driver.mark_published(connection, table, list(outbox_ids), time.time())


# The three statements above run for every write or every relay batch: they go to the driver directly
# (`outbox_driver`), on the caller's connection. The rare ones below keep SQLAlchemy's.


async def backlog(connection: AsyncConnection, table: Table) -> int:
    """How many committed changes wait to be published, across all streams."""
    result = await connection.execute(select(func.count()).where(table.c.published_at.is_(None)))
    return int(result.scalar_one())


async def delete_published(connection: AsyncConnection, table: Table, older_than: float) -> int:
    """Drop rows published before `older_than` (Unix time); they are in the stream now."""
    result = await connection.execute(delete(table).where(table.c.published_at < older_than))
    return int(result.rowcount or 0)
