"""The outbox (DESIGN §3, invariants 1 and 2): a change is in the outbox exactly when its write committed,
the relay publishes committed rows even when they commit out of id order, and published rows are retained
for a while, then deleted, while unpublished ones never are."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from gateway.broker.base import Entry
from gateway.changes import change as changes
from gateway.changes import sqlite_create
from gateway.changes import writes as writes_module
from gateway.changes.outbox import OUTBOX_TABLE, record_changes
from gateway.changes.outbox_driver import SQLITE_ROWS_PER_INSERT
from gateway.database import write_transaction
from gateway.models.rows import to_json_row
from tests.changes.conftest import (
    STREAM,
    InProcessFactory,
    RedisBrokerFactory,
    RelayFactory,
    Store,
    StoreFactory,
    assert_once_each,
    change_of,
    eventually,
    has_lease,
    stream_entries,
)
from tests.conftest import DatabaseFactory


def q(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


FAILED_WRITES: list[tuple[str, str, Any, int]] = [
    # validation errors, before and inside the transaction
    ("POST", "/api/Todos", {"title": [123]}, 422),
    ("POST", "/api/Todos", {"done": True}, 422),
    ("POST", "/api/Todos", [{"title": "fine"}, {"title": {"n": 5}}], 422),
    ("PATCH", "/api/Todos/1", {"title": True}, 422),
    ("PUT", "/api/Todos/1", {"priority": 1}, 422),
    ("PATCH", "/api/Todos", {"id": 1, "done": "maybe"}, 422),
    ("POST", "/api/Todos/update?where=" + q({"id": 1}), {"id": 2}, 422),
    ("POST", "/api/Todos/update?where=" + q({"id": 1}), {"priority": "high"}, 422),
    # missing rows
    ("PATCH", "/api/Todos/999", {"done": True}, 404),
    ("PUT", "/api/Todos/999", {"title": "x"}, 404),
    ("POST", "/api/Todos/999/replace", {"title": "x"}, 404),
    ("PATCH", "/api/Todos", {"id": 999, "title": "x"}, 404),
    ("PUT", "/api/Todos", {"id": 999, "title": "x"}, 404),
    # client-chosen ids: refused on Todo (forceId); duplicates of Item's, the second row of the array
    # rejected after the first was inserted
    ("POST", "/api/Todos", {"id": 1, "title": "dup"}, 422),
    ("POST", "/api/Items", {"id": 1, "name": "dup"}, 409),
    ("POST", "/api/Items", [{"name": "new"}, {"id": 1, "name": "dup"}], 409),
    ("PUT", "/api/Items/1", {"id": 2, "name": "moved"}, 400),
    # an id that cannot change, and an ambiguous upsert
    ("PATCH", "/api/Todos/1", {"id": 2, "title": "moved"}, 400),
    ("POST", "/api/Todos/upsertWithWhere?where=" + q({"done": False}), {"priority": 1}, 400),
    # no rows matched or deleted: a 200 that changes nothing
    ("POST", "/api/Todos/update?where=" + q({"title": "nobody"}), {"done": True}, 200),
    ("DELETE", "/api/Todos/999", None, 200),
    ("DELETE", "/api/Todos/not-a-number", None, 200),
]


async def test_failed_writes_publish_nothing(
    in_process: InProcessFactory, two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with in_process(models=two_models) as gateway:
        client = gateway.client
        seed = await client.post("/api/Todos", json=[{"title": "one"}, {"title": "two"}])
        assert seed.status_code == 200
        item = await client.post("/api/Items", json={"id": 1, "name": "item"})
        assert item.status_code == 200
        rows_before = (await client.get("/api/Todos")).json()
        items_before = (await client.get("/api/Items")).json()
        await gateway.published(2)

        async def items(count: int) -> list[Entry] | None:
            entries = await stream_entries(gateway.broker, "Item")
            return entries if len(entries) >= count else None

        await eventually(lambda: items(1), what="the Item change is published")

        for method, url, body, status in FAILED_WRITES:
            response = await client.request(method, url, json=body)
            assert response.status_code == status, (method, url, body, response.text)
            if status == 200:
                assert response.json() == {"count": 0}

        # a failure after the row was written, inside the write's transaction, rolls both back
        async def broken(*_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError("the outbox insert failed")

        monkeypatch.setattr(writes_module, "record_changes", broken)

        def broken_in_thread(*_args: Any) -> None:  # SQLite's one-hop create builds them on its thread
            raise RuntimeError("the outbox insert failed")

        monkeypatch.setattr(sqlite_create, "outbox_rows", broken_in_thread)
        with pytest.raises(RuntimeError, match="outbox insert failed"):
            await gateway.gateway.apis[STREAM].writes.create([{"title": "rolled back"}])
        with pytest.raises(RuntimeError, match="outbox insert failed"):
            await gateway.gateway.apis[STREAM].writes.patch_by_id(1, {"title": "rolled back"})
        monkeypatch.undo()

        assert (await client.get("/api/Todos")).json() == rows_before
        assert (await client.get("/api/Items")).json() == items_before
        assert await gateway.outbox_count() == 3
        # one more write per stream: once it is published, anything committed before it would be too
        assert (await client.post("/api/Todos", json={"title": "last"})).status_code == 200
        assert (await client.post("/api/Items", json={"name": "last"})).status_code == 200
        entries = await gateway.published(3)
        assert [change_of(entry)["data"]["title"] for entry in entries] == ["one", "two", "last"]
        item_entries = await eventually(lambda: items(2), what="the last Item change is published")
        assert [change_of(entry)["data"]["name"] for entry in item_entries] == ["item", "last"]
        assert await gateway.outbox_count() == 5
        await gateway.all_marked()


async def test_a_change_committed_after_a_later_one_is_still_published(
    postgres_store: Store, make_redis_broker: RedisBrokerFactory, make_relay: RelayFactory
) -> None:
    """Transaction A takes the smaller outbox id but commits after B: both are published, once each."""
    store = postgres_store
    broker = make_redis_broker()
    relay = make_relay(store, broker)
    await eventually(lambda: has_lease(relay), what="the relay holds the lease")

    async with write_transaction(store.engine) as slow:
        result = await slow.execute(insert(store.table).values(title="slow").returning(*store.table.c))
        await record_changes(
            slow,
            store.outbox,
            STREAM,
            [changes.created(store.model, to_json_row(store.model, result.one()._mapping))],
        )
        slow_id = (await slow.execute(select(func.max(store.outbox.c.id)))).scalar_one()

        await store.writes.create([{"title": "fast"}])
        await relay.committed(STREAM)
        fast_entry = await eventually(lambda: stream_entries(broker), what="the fast change is published")
        assert [change_of(e)["data"]["title"] for e in fast_entry] == ["fast"]
        assert fast_entry[0].outbox_id > slow_id
    await relay.committed(STREAM)

    async def both() -> bool:
        return len(await stream_entries(broker)) == 2

    await eventually(both, what="the slow change is published too")
    entries = await stream_entries(broker)
    assert [change_of(e)["data"]["title"] for e in entries] == ["fast", "slow"]
    assert [e.outbox_id for e in entries] == [fast_entry[0].outbox_id, slow_id]
    await eventually(store.all_published, what="both are marked (the last mark follows its append)")


async def test_published_rows_are_deleted_after_the_retention_unpublished_never(
    postgres_store: Store, make_redis_broker: RedisBrokerFactory, make_relay: RelayFactory
) -> None:
    store = postgres_store
    rows = await store.writes.create([{"title": "old"}, {"title": "older"}, {"title": "recent"}])
    async with write_transaction(store.engine) as connection:
        # a change of a stream no relay publishes: committed long ago, still waiting
        await connection.execute(
            insert(store.outbox).values(stream="Ghost", change=b"{}", committed_at=time.time() - 86_400)
        )
    make_relay(store, make_redis_broker(), outbox_retention=600.0, maintenance_interval=0.05)

    async def published() -> bool:
        return [r.stream for r in await store.outbox_rows() if r.published_at is None] == ["Ghost"]

    await eventually(published, what="the Todo changes are published")
    outbox = await store.outbox_rows()
    old_ids = [r.id for r in outbox if r.change.get("target") in (rows[0]["id"], rows[1]["id"])]
    async with write_transaction(store.engine) as connection:
        await connection.execute(
            update(store.outbox).where(store.outbox.c.id.in_(old_ids)).values(published_at=time.time() - 601)
        )

    async def old_ones_gone() -> bool:
        return not {r.id for r in await store.outbox_rows()} & set(old_ids)

    await eventually(old_ones_gone, what="rows published before the retention are deleted")
    remaining = await store.outbox_rows()
    assert [(r.stream, r.change.get("data", {}).get("title")) for r in remaining] == [
        ("Todo", "recent"),
        ("Ghost", None),
    ]


FORBID_TODO_CHANGES = {
    "postgresql": f"ALTER TABLE {OUTBOX_TABLE} ADD CONSTRAINT no_todos CHECK (stream <> '{STREAM}')",
    "sqlite": f"CREATE TRIGGER no_todos BEFORE INSERT ON {OUTBOX_TABLE} WHEN NEW.stream = '{STREAM}' "
    "BEGIN SELECT RAISE(ABORT, 'no todos'); END",
}
DRIVER_ERRORS = {"postgresql": asyncpg.CheckViolationError, "sqlite": sqlite3.IntegrityError}


async def test_a_failed_outbox_insert_rolls_the_write_back(
    database_url: str, make_store: StoreFactory
) -> None:
    """The outbox row goes straight to the driver (`outbox_driver`), yet in the write's transaction: when it
    fails, the error is SQLAlchemy's, as for any statement, and the row change is rolled back with it."""
    store = await make_store(database_url)
    dialect = store.engine.dialect.name
    async with write_transaction(store.engine) as connection:
        await connection.execute(text(FORBID_TODO_CHANGES[dialect]))
    with pytest.raises(DBAPIError) as failed:
        await store.writes.create([{"title": "never"}])
    assert isinstance(failed.value.orig, DRIVER_ERRORS[dialect])
    assert await store.rows() == {}
    assert await store.outbox_rows() == []


async def test_many_changes_of_one_write_are_inserted_and_published_in_order(
    database_url: str,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    make_relay: RelayFactory,
) -> None:
    """More rows than one of SQLite's multi-row INSERTs takes, in one write: all in the outbox, in order,
    and each published once, in order, in batches whose marks name hundreds of ids."""
    store = await make_store(database_url)
    count = 2 * SQLITE_ROWS_PER_INSERT + 50
    rows = await store.writes.create([{"title": f"row {i}", "priority": i % 5} for i in range(count)])
    outbox = await store.outbox_rows()
    assert [r.change["target"] for r in outbox] == [row["id"] for row in rows]
    assert [r.change["data"]["title"] for r in outbox] == [f"row {i}" for i in range(count)]

    broker = make_redis_broker()
    make_relay(store, broker, batch=300)
    await eventually(store.all_published, what="the relay published every change")
    entries = await stream_entries(broker)
    assert_once_each(entries, [r.id for r in outbox])
    assert [change_of(e)["data"]["title"] for e in entries] == [f"row {i}" for i in range(count)]


async def test_outbox_rows_are_refused_outside_the_writes_transaction(postgres_store: Store) -> None:
    """An outbox row sent to the driver outside a transaction would commit on its own, so it is refused.
    (`write_transaction` begins its transaction before any statement: its BEGIN is its ping.)"""
    store = postgres_store
    change = changes.created(store.model, {"id": 1, "title": "alone"})
    with pytest.raises(RuntimeError, match="inside its transaction"):
        async with store.engine.connect() as connection:
            await record_changes(connection, store.outbox, STREAM, [change])
    assert await store.outbox_rows() == []


async def test_outbox_rows_are_refused_outside_a_transaction_on_sqlite(
    sqlite_database: DatabaseFactory, make_store: StoreFactory
) -> None:
    """SQLite begins at `write_transaction` (BEGIN IMMEDIATE); an outbox row sent to aiosqlite on a
    connection in no transaction would commit on its own, so it is refused."""
    store = await make_store(await sqlite_database())
    change = changes.created(store.model, {"id": 1, "title": "alone"})
    async with store.engine.connect() as connection:
        with pytest.raises(RuntimeError, match="inside its transaction"):
            await record_changes(connection, store.outbox, STREAM, [change])
    assert await store.outbox_rows() == []
