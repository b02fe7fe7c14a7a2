"""The relay (DESIGN §3, invariants 1 and 4) against real Redis and PostgreSQL: writes keep succeeding while
Redis is down and are all published once it is back; a relay killed between its append and its mark (on
SQLite too), or one that froze past its lease, leaves neither a lost nor a duplicated change behind."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.broker.base import Lease, Record
from tests.changes.conftest import (
    DEADLINE,
    STREAM,
    GatewayFactory,
    RedisBrokerFactory,
    RelayFactory,
    Store,
    StoreFactory,
    assert_once_each,
    before_of,
    change_of,
    eventually,
    has_lease,
    lost_lease,
    ok,
    serve_gateway,
    stream_entries,
)
from tests.conftest import POSTGRES_ADMIN_URL, DatabaseFactory
from tests.redis_server import RedisServers
from tests.server import ROOT


async def test_writes_succeed_while_redis_is_down_and_are_published_when_it_returns(
    redis_servers: RedisServers, postgres_database: DatabaseFactory, redis_prefix: str
) -> None:
    server = redis_servers.start()
    database_url = await postgres_database()
    async with serve_gateway(
        database_url=database_url, broker_url=server.url, redis_prefix=redis_prefix
    ) as gateway:
        client = gateway.client
        await eventually(lambda: has_lease(gateway.gateway.relay), what="the relay holds the lease")
        first = ok(await client.post("/api/Todos", json={"title": "before the outage"}))
        await gateway.published(1)

        server.stop()
        expected: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        durations: list[float] = []
        for i in range(12):
            if i == 6:  # the rest once the relay has noticed: each write now wants to wake other relays
                await eventually(lambda: lost_lease(gateway.gateway.relay), what="the relay drops its lease")
            started = time.monotonic()
            if i % 3 == 0:
                before = ok(await client.get(f"/api/Todos/{first['id']}"))
                row = ok(await client.patch(f"/api/Todos/{first['id']}", json={"priority": i}))
                expected.append(({"target": row["id"], "data": row, "type": "update"}, before))
            else:
                row = ok(await client.post("/api/Todos", json={"title": f"during the outage {i}"}))
                expected.append(({"target": row["id"], "data": row, "type": "create"}, None))
            durations.append(time.monotonic() - started)
        assert not server.running
        # A write's reply must not wait for the broker's connection retries (~0.5 s against a closed port).
        assert statistics.median(durations[6:]) < 0.25, f"writes took {durations} while Redis was down"

        server.start()  # empty: a new epoch, without the change made before the outage
        entries = await gateway.published(len(expected))
        assert [change_of(entry) for entry in entries] == [change for change, _ in expected]
        assert [before_of(entry) for entry in entries] == [before for _, before in expected]
        outbox_ids = [entry.outbox_id for entry in entries]
        assert outbox_ids == sorted(set(outbox_ids))
        await gateway.all_marked()
        assert await gateway.outbox_count() == len(expected) + 1


async def test_a_relay_killed_between_append_and_mark_leaves_no_duplicate_and_no_gap(
    database_url: str,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    redis_url: str,
    redis_prefix: str,
    gateway_processes: GatewayFactory,
) -> None:
    store = await make_store(database_url)
    await store.writes.create([{"title": f"row {i}"} for i in range(30)])
    ids = [row.id for row in await store.outbox_rows()]
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_RELAY_BATCH": "10",
        "GATEWAY_LEASE_TTL": "1",
    }

    # A relay appends two batches of ten and is SIGKILLed after the second append, before its mark.
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.changes.crashing_relay",
        "2",
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(DEADLINE):
            await relay.wait()
    finally:
        if relay.returncode is None:
            relay.kill()
            await relay.wait()
    assert relay.returncode == -signal.SIGKILL
    broker = make_redis_broker()
    assert [entry.outbox_id for entry in await stream_entries(broker)] == ids[:20]
    assert await store.unpublished() == ids[10:], "the kill did not fall between append and mark"

    # More writes while nobody publishes, then a fresh gateway takes the lease once the dead one's expires.
    await store.writes.create([{"title": f"later {i}"} for i in range(5)])
    ids = [row.id for row in await store.outbox_rows()]
    # Its batches differ from the dead relay's (as they do whenever more rows committed meanwhile), so
    # only reconciling with the stream's tail, not the append script's replay guard, can avoid duplicates.
    gateway_processes(env | {"GATEWAY_RELAY_BATCH": "500"})
    await eventually(store.all_published, what="the fresh gateway published the backlog")
    assert_once_each(await stream_entries(broker), ids)
    assert [change_of(e)["data"]["title"] for e in await stream_entries(broker)] == [
        *(f"row {i}" for i in range(30)),
        *(f"later {i}" for i in range(5)),
    ]


async def test_a_relay_that_froze_past_its_lease_is_reconciled_by_its_successor(
    postgres_store: Store, make_redis_broker: RedisBrokerFactory, make_relay: RelayFactory
) -> None:
    """Relay A appends a batch, then freezes (a stalled process) before marking it, long enough for its
    lease to expire. Relay B takes the lease, finds A's batch at the stream's tail and marks it instead of
    appending it again, then publishes the rest. When A wakes, it cannot append any more."""
    store = postgres_store
    await store.writes.create([{"title": f"row {i}"} for i in range(20)])
    broker_a, broker_b = make_redis_broker(), make_redis_broker()
    frozen, thaw = asyncio.Event(), asyncio.Event()
    append, renew, acquire = broker_a.append, broker_a.renew_lease, broker_a.acquire_lease

    async def append_then_freeze(stream: str, records: Sequence[Record], *, lease: Lease) -> list[str]:
        offsets = await append(stream, records, lease=lease)
        if not frozen.is_set():
            frozen.set()
            await thaw.wait()
        return offsets

    async def renew_unless_frozen(lease: Lease, ttl: float) -> bool:
        if frozen.is_set():
            await thaw.wait()
        return await renew(lease, ttl)

    async def acquire_unless_frozen(stream: str, holder: str, ttl: float) -> Lease | None:
        if frozen.is_set():
            await thaw.wait()
        return await acquire(stream, holder, ttl)

    broker_a.append = append_then_freeze  # type: ignore[method-assign]
    broker_a.renew_lease = renew_unless_frozen  # type: ignore[method-assign]
    broker_a.acquire_lease = acquire_unless_frozen  # type: ignore[method-assign]
    relay_a = make_relay(store, broker_a, batch=5)
    async with asyncio.timeout(DEADLINE):
        await frozen.wait()
    ids = [row.id for row in await store.outbox_rows()]
    assert [entry.outbox_id for entry in await stream_entries(broker_b)] == ids[:5]

    relay_b = make_relay(store, broker_b, batch=50)  # not A's batches: the append guard cannot help
    await eventually(lambda: has_lease(relay_b), what="B takes the lease once A's has expired")
    await eventually(store.all_published, what="B publishes the rest")
    assert_once_each(await stream_entries(broker_b), ids)

    thaw.set()
    await eventually(lambda: lost_lease(relay_a), what="A notices it lost its lease")
    await store.writes.create([{"title": f"later {i}"} for i in range(7)])
    await relay_a.committed(STREAM)
    await relay_b.committed(STREAM)
    await eventually(store.all_published, what="B publishes the later rows")
    assert_once_each(await stream_entries(broker_b), [row.id for row in await store.outbox_rows()])


async def test_the_relay_recovers_when_its_database_connections_are_killed(
    postgres_store: Store, make_redis_broker: RedisBrokerFactory, make_relay: RelayFactory
) -> None:
    """The relay keeps one connection for its statements; when PostgreSQL drops it (a restart, a failover,
    an administrator), the relay takes a fresh one and publishes on."""
    store = postgres_store
    broker = make_redis_broker()
    relay = make_relay(store, broker)
    await eventually(lambda: has_lease(relay), what="the relay holds the lease")
    await store.writes.create([{"title": "before"}])
    await relay.committed(STREAM)
    await eventually(store.all_published, what="the first change is published")

    database = store.engine.url.database
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await admin.close()
    assert killed >= 1

    for i in range(3):
        await store.writes.create([{"title": f"after {i}"}])
        await relay.committed(STREAM)
    await eventually(store.all_published, what="the relay publishes with a new connection")
    entries = await stream_entries(broker)
    assert [change_of(entry)["data"]["title"] for entry in entries] == [
        "before",
        "after 0",
        "after 1",
        "after 2",
    ]


async def test_a_busy_relay_gathers_commits_into_batches_and_an_idle_one_never_waits(
    postgres_database: DatabaseFactory,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    make_relay: RelayFactory,
) -> None:
    """Under a stream of commits the relay lingers between rounds (`busy_linger`), so each batch costs its
    SELECT, append and UPDATE once for many rows; a write now and then is published at once all the same."""
    relays: list[Any] = []

    async def committed(stream: str, records: Sequence[Record] = ()) -> None:
        await relays[0].committed(stream, records)

    store = await make_store(await postgres_database(), committed)
    broker = make_redis_broker()
    appends: list[int] = []
    append = broker.append

    async def counted(stream: str, records: Sequence[Record], *, lease: Lease) -> list[str]:
        appends.append(len(records))
        return await append(stream, records, lease=lease)

    broker.append = counted  # type: ignore[method-assign]
    relays.append(make_relay(store, broker, poll_interval=30.0, busy_linger=0.3))
    await eventually(lambda: has_lease(relays[0]), what="the relay holds the lease")

    async def writer(n: int) -> None:
        for i in range(25):
            await store.writes.create([{"title": f"w{n}-{i}"}])

    await asyncio.gather(*(writer(n) for n in range(8)))
    await eventually(store.all_published, what="the burst is published")
    outbox_ids = [row.id for row in await store.outbox_rows()]
    assert_once_each(await stream_entries(broker), outbox_ids, in_order=False)  # concurrent commits
    assert sum(appends) == 200
    assert len(appends) <= 20, appends

    for i in range(3):  # the burst is over: no linger, and the poll (30 s) is not what publishes these
        started = time.monotonic()
        await store.writes.create([{"title": f"alone {i}"}])
        await eventually(store.all_published, timeout=2.0, what="a lone write is published")
        assert time.monotonic() - started < 2.0


async def test_a_batch_is_marked_by_the_next_read_and_never_read_again_meanwhile(
    database_url: str,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    make_relay: RelayFactory,
) -> None:
    """A published batch's mark rides with the stream's next read (one round trip per batch). Until then the
    batch is left out of the reads (on PostgreSQL that one statement's read sees the rows still unmarked), so
    nothing is appended twice; and a relay that shuts down marks what is still waiting."""
    store = await make_store(database_url)
    broker = make_redis_broker()
    await store.writes.create([{"title": "row 1"}])  # published by the round that follows the lease
    # Nothing but the lease and the writes below wake it, and its lease outlives the test (a new one would
    # reconcile, which marks).
    relay = make_relay(store, broker, poll_interval=30.0, mark_delay=30.0, lease_ttl=30.0)
    for count in (1, 2):
        if count == 2:
            await store.writes.create([{"title": "row 2"}])
            await relay.committed(STREAM)

        async def appended(count: int = count) -> bool:
            return len(await stream_entries(broker)) >= count

        await eventually(appended, what=f"row {count} is appended")
        ids = [row.id for row in await store.outbox_rows()]
        assert await store.unpublished() == ids[-1:], "the newest batch waits for the next read's mark"
        assert_once_each(await stream_entries(broker), ids)

    await relay.aclose()
    assert await store.unpublished() == []
