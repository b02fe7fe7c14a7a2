"""The relay appends the rows a SQLite create here committed without reading them back (`Relay.committed`
with records), and only when nothing can lie between them and what it appended last: rows another worker
committed in between are read and appended in order, each once."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.broker.base import Record
from gateway.changes import relay as relay_module
from gateway.changes.relay import Relay
from tests.changes.conftest import (
    STREAM,
    RedisBrokerFactory,
    RelayFactory,
    StoreFactory,
    assert_once_each,
    eventually,
    has_lease,
    stream_entries,
)
from tests.conftest import DatabaseFactory


class Forward:
    """A store's `committed` callback, to the relay made after the store."""

    relay: Relay | None = None

    async def __call__(self, stream: str, records: Sequence[Record] = ()) -> None:
        if self.relay is not None:
            await self.relay.committed(stream, records)


async def test_creates_here_are_appended_without_reading_the_outbox(
    sqlite_database: DatabaseFactory,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    make_relay: RelayFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forward = Forward()
    store = await make_store(await sqlite_database(), forward)
    broker = make_redis_broker()
    forward.relay = make_relay(store, broker, poll_interval=30.0, mark_delay=30.0)
    await eventually(lambda: has_lease(forward.relay), what="the relay holds the lease")
    await store.writes.create([{"title": "first"}])  # read from the outbox: where the relay is
    await eventually(lambda: stream_entries(broker), what="the first create is in the stream")

    reads: list[str] = []
    real_pending = relay_module.pending

    async def counted(*args: Any, **kwargs: Any) -> list[Record]:
        reads.append(args[2])
        return await real_pending(*args, **kwargs)

    monkeypatch.setattr(relay_module, "pending", counted)
    for n in range(20):  # one at a time, each published before the next, as sequential POSTs
        await store.writes.create([{"title": f"handed {n}"}, {"title": f"and its twin {n}"}])

        async def appended(count: int = 3 + 2 * n) -> bool:
            return len(await stream_entries(broker)) == count

        await eventually(appended, what=f"create {n} is in the stream")
    assert reads == [], f"the outbox was read {len(reads)} times for 20 creates"
    assert_once_each(await stream_entries(broker), [row.id for row in await store.outbox_rows()])
    await forward.relay.aclose()  # marks what it owes
    assert await store.all_published()


async def test_rows_another_worker_committed_in_between_are_read_and_appended_in_order(
    sqlite_database: DatabaseFactory,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    make_relay: RelayFactory,
) -> None:
    """Two workers on one SQLite file; only the first runs a relay (it holds the lease) and the second's
    commits wake nobody, so the relay meets them only as gaps before its own creates' ids (or on its
    poll). Creates, patches and deletes of both, interleaved at random."""
    database_url = await sqlite_database()
    forward = Forward()
    here = await make_store(database_url, forward)
    elsewhere = await make_store(database_url)
    broker = make_redis_broker()
    forward.relay = make_relay(here, broker, poll_interval=0.3)
    await eventually(lambda: has_lease(forward.relay), what="the relay holds the lease")
    rng = random.Random(16)
    ids: list[Any] = []
    for n in range(60):
        store = here if rng.random() < 0.6 else elsewhere
        kind = rng.choice(["create", "create", "create", "patch", "delete"]) if ids else "create"
        if kind == "create":
            rows = await store.writes.create([{"title": f"w{n}"}] * rng.randint(1, 3))
            ids += [row["id"] for row in rows]
        elif kind == "patch":
            await store.writes.patch_by_id(rng.choice(ids), {"priority": n})
        else:
            await store.writes.delete_by_id(ids.pop(rng.randrange(len(ids))))

    outbox_ids = [row.id for row in await here.outbox_rows()]

    async def all_appended() -> bool:
        return len(await stream_entries(broker)) >= len(outbox_ids)

    await eventually(all_appended, what="every change is in the stream")
    assert_once_each(await stream_entries(broker), outbox_ids)
    assert [entry.outbox_id for entry in await stream_entries(broker)] == outbox_ids
    await eventually(here.all_published, what="every row is marked")
    assert STREAM in forward.relay.leases
