"""The `Broker` contract, run against every implementation (ids `memory` and `redis`).

Each test states one promise of `gateway/broker/base.py`. Behaviour only one backend has (Redis restarts,
exact trimming) is tested in `test_redis.py` and `test_memory.py`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.broker.base import Broker, BrokerError, LeaseLost, Record, StreamHead
from gateway.broker.continuity import ZERO_OFFSET, offset_key

from . import eventually, offsets_of, records, still_pending
from .conftest import BrokerFactory

S = "todos"
TTL = 5.0


async def _append(broker: Broker, *outbox_ids: int, stream: str = S) -> list[str]:
    lease = await broker.acquire_lease(stream, "relay-1", TTL)
    assert lease is not None
    try:
        return await broker.append(stream, records(*outbox_ids), lease=lease)
    finally:
        await broker.release_lease(lease)


# append: offsets, prev chain, epoch, fields


async def test_append_returns_strictly_increasing_offsets(broker: Broker) -> None:
    first = await _append(broker, 1, 2, 3)
    second = await _append(broker, 4)
    keys = [offset_key(offset) for offset in first + second]
    assert keys == sorted(keys)
    assert len(set(keys)) == 4


async def test_prev_chains_every_entry_to_the_one_before_across_appends(broker: Broker) -> None:
    offsets = await _append(broker, 1, 2) + await _append(broker, 3) + await _append(broker, 4, 5)
    entries = await broker.read(S, ZERO_OFFSET, 100)
    assert offsets_of(entries) == offsets
    assert [entry.prev for entry in entries] == [ZERO_OFFSET, *offsets[:-1]]


async def test_entries_carry_the_records_fields(broker: Broker) -> None:
    lease = await broker.acquire_lease(S, "relay-1", TTL)
    assert lease is not None
    sent = [
        Record(outbox_id=7, change=b'{"type":"create"}', before=None, committed_at=1700000000.123456),
        Record(outbox_id=8, change=b"\x00\xff binary", before=b'{"id":1}', committed_at=1700000001.5),
        Record(outbox_id=9, change=b"{}", before=b"", committed_at=0.0),
    ]
    await broker.append(S, sent, lease=lease)
    got = await broker.read(S, ZERO_OFFSET, 10)
    assert [(e.outbox_id, e.change, e.before, e.committed_at) for e in got] == [
        (r.outbox_id, r.change, r.before, r.committed_at) for r in sent
    ]


async def test_epoch_is_stable_and_the_same_in_head_and_entries(broker: Broker) -> None:
    before = await broker.head(S)
    await _append(broker, 1)
    await _append(broker, 2)
    after = await broker.head(S)
    entries = await broker.read(S, ZERO_OFFSET, 10)
    assert before.epoch == after.epoch
    assert {entry.epoch for entry in entries} == {before.epoch}


async def test_an_identical_batch_appended_again_is_not_duplicated(broker: Broker) -> None:
    """The retry guard: a batch whose outbox ids are already the newest entries returns their offsets."""
    lease = await broker.acquire_lease(S, "relay-1", TTL)
    assert lease is not None
    batch = records(1, 2)
    offsets = await broker.append(S, batch, lease=lease)
    assert await broker.append(S, batch, lease=lease) == offsets
    assert offsets_of(await broker.read(S, ZERO_OFFSET, 10)) == offsets
    # Anything else is appended as given, even if it overlaps.
    assert len(await broker.append(S, records(2, 3), lease=lease)) == 2
    assert [e.outbox_id for e in await broker.read(S, ZERO_OFFSET, 10)] == [1, 2, 2, 3]


# read


async def test_read_starts_after_the_offset_and_honours_count(broker: Broker) -> None:
    offsets = await _append(broker, 1, 2, 3, 4, 5)
    assert offsets_of(await broker.read(S, ZERO_OFFSET, 2)) == offsets[:2]
    assert offsets_of(await broker.read(S, offsets[1], 2)) == offsets[2:4]
    assert offsets_of(await broker.read(S, offsets[3], 10)) == offsets[4:]
    assert await broker.read(S, offsets[4], 10) == []


async def test_read_of_an_empty_or_unknown_stream_is_empty(broker: Broker) -> None:
    assert await broker.read("nothing-here", ZERO_OFFSET, 10) == []


async def test_read_rejects_bad_arguments(broker: Broker) -> None:
    with pytest.raises(ValueError, match="offset"):
        await broker.read(S, "not-an-offset", 10)
    with pytest.raises(ValueError, match="count"):
        await broker.read(S, ZERO_OFFSET, 0)


# wait


async def test_wait_returns_at_once_when_entries_exist(broker: Broker) -> None:
    offsets = await _append(broker, 1, 2)
    started = time.monotonic()
    entries = await broker.wait(S, ZERO_OFFSET, 10, 30.0)
    assert offsets_of(entries) == offsets
    assert time.monotonic() - started < 1.0


async def test_wait_wakes_when_another_task_appends(broker: Broker) -> None:
    last = (await broker.head(S)).last
    waiter = asyncio.create_task(broker.wait(S, last, 10, 30.0))
    assert await still_pending(waiter)
    offsets = await _append(broker, 1)
    assert offsets_of(await asyncio.wait_for(waiter, 2.0)) == offsets


async def test_wait_returns_nothing_on_timeout(broker: Broker) -> None:
    await _append(broker, 1)
    last = (await broker.head(S)).last
    started = time.monotonic()
    assert await broker.wait(S, last, 10, 0.3) == []
    assert 0.25 <= time.monotonic() - started < 2.0
    assert await broker.wait(S, last, 10, 0) == []


async def test_a_cancelled_wait_leaves_the_broker_usable(broker: Broker) -> None:
    waiter = asyncio.create_task(broker.wait(S, ZERO_OFFSET, 10, 30.0))
    assert await still_pending(waiter)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    [offset] = await _append(broker, 1)
    # A connection still carrying the cancelled read's reply would hand it to the next wait.
    assert await broker.wait(S, offset, 10, 0.3) == []
    assert offsets_of(await broker.wait(S, ZERO_OFFSET, 10, 5.0)) == [offset]


# head and tail


async def test_head_of_an_empty_stream(broker: Broker) -> None:
    head = await broker.head(S)
    assert head == StreamHead(head.epoch, None, ZERO_OFFSET)
    assert head.epoch
    assert (await broker.head(S)).epoch == head.epoch


async def test_head_of_a_stream_with_entries(broker: Broker) -> None:
    offsets = await _append(broker, 1, 2, 3)
    head = await broker.head(S)
    assert (head.first, head.last) == (offsets[0], offsets[-1])


async def test_tail_returns_the_newest_entries_oldest_first(broker: Broker) -> None:
    assert await broker.tail(S, 3) == []
    offsets = await _append(broker, 1, 2, 3, 4)
    assert offsets_of(await broker.tail(S, 2)) == offsets[2:]
    assert offsets_of(await broker.tail(S, 10)) == offsets


# retention


async def test_length_retention_keeps_about_maxlen_entries(make_broker: BrokerFactory) -> None:
    broker = make_broker(stream_maxlen=200)
    lease = await broker.acquire_lease(S, "relay-1", TTL)
    assert lease is not None
    offsets: list[str] = []
    for start in range(0, 1000, 50):
        offsets += await broker.append(S, records(*range(start, start + 50)), lease=lease)
    kept = await broker.read(S, ZERO_OFFSET, 10_000)
    assert 200 <= len(kept) <= 300  # Redis trims whole nodes of 100 entries (MAXLEN ~)
    assert offsets_of(kept) == offsets[-len(kept) :]
    head = await broker.head(S)
    assert (head.first, head.last) == (kept[0].offset, offsets[-1])
    assert kept[0].prev == offsets[-len(kept) - 1]  # points at a trimmed entry: readers can see the gap


async def test_trim_drops_old_entries_but_never_the_newest(make_broker: BrokerFactory) -> None:
    broker = make_broker(stream_maxlen=None)
    lease = await broker.acquire_lease(S, "relay-1", TTL)
    assert lease is not None
    offsets: list[str] = []
    for start in range(0, 1000, 100):
        offsets += await broker.append(S, records(*range(start, start + 100)), lease=lease)
    await broker.trim(S, older_than=0.0)
    await broker.trim(S, older_than=-1.0)
    assert len(await broker.read(S, ZERO_OFFSET, 10_000)) == 1000
    await broker.trim(S, older_than=time.time() + 3600)
    kept = await broker.read(S, ZERO_OFFSET, 10_000)
    assert 1 <= len(kept) <= 100  # Redis keeps the newest node of up to 100 entries (MINID ~)
    assert kept[-1].offset == offsets[-1]
    assert (await broker.head(S)).last == offsets[-1]
    # The chain still continues from the newest entry.
    [offset] = await broker.append(S, records(5000), lease=lease)
    assert (await broker.read(S, offsets[-1], 10))[0].prev == offsets[-1]
    assert offset_key(offset) > offset_key(offsets[-1])


async def test_trim_of_an_unknown_stream_is_harmless(broker: Broker) -> None:
    await broker.trim("nothing-here", older_than=time.time())


# leases


async def test_a_held_lease_cannot_be_acquired_by_another_holder(broker: Broker) -> None:
    first = await broker.acquire_lease(S, "relay-1", TTL)
    assert first is not None
    assert (first.stream, first.holder) == (S, "relay-1")
    assert await broker.acquire_lease(S, "relay-2", TTL) is None
    other = await broker.acquire_lease("other", "relay-2", TTL)  # leases are per stream
    assert other is not None
    assert other.token != first.token


async def test_append_without_the_current_lease_raises_and_appends_nothing(broker: Broker) -> None:
    held = await broker.acquire_lease(S, "relay-1", TTL)
    other_stream = await broker.acquire_lease("other", "relay-1", TTL)
    assert held is not None
    assert other_stream is not None
    forged = type(held)(stream=S, holder="relay-1", token="not-the-token")
    with pytest.raises(LeaseLost):
        await broker.append(S, records(1), lease=forged)
    with pytest.raises(LeaseLost):
        await broker.append(S, records(1), lease=other_stream)
    assert await broker.read(S, ZERO_OFFSET, 10) == []
    assert issubclass(LeaseLost, BrokerError)


async def test_an_expired_lease_is_lost(broker: Broker) -> None:
    old = await broker.acquire_lease(S, "relay-1", 0.2)
    assert old is not None
    assert await broker.renew_lease(old, 0.2)
    successor = None

    async def taken_over() -> bool:
        nonlocal successor
        successor = await broker.acquire_lease(S, "relay-2", TTL)
        return successor is not None

    await eventually(taken_over, what="the expired lease being acquired by another holder")
    assert successor is not None
    assert not await broker.renew_lease(old, TTL)
    with pytest.raises(LeaseLost):
        await broker.append(S, records(1), lease=old)
    await broker.release_lease(old)  # releasing a lost lease must not free the successor's
    assert await broker.acquire_lease(S, "relay-3", TTL) is None
    assert len(await broker.append(S, records(1), lease=successor)) == 1


async def test_a_released_lease_can_be_acquired_at_once(broker: Broker) -> None:
    lease = await broker.acquire_lease(S, "relay-1", TTL)
    assert lease is not None
    await broker.release_lease(lease)
    assert not await broker.renew_lease(lease, TTL)
    assert await broker.acquire_lease(S, "relay-2", TTL) is not None


# notifications


async def test_notify_reaches_a_listener(broker: Broker) -> None:
    await broker.notify(S)  # nobody listens: lost, and no error
    async with broker.notifications() as names:
        await broker.notify(S)
        await broker.notify("other")
        assert await asyncio.wait_for(anext(names), 5.0) == S
        assert await asyncio.wait_for(anext(names), 5.0) == "other"


async def test_every_listener_gets_each_notification(broker: Broker) -> None:
    async with broker.notifications() as first, broker.notifications() as second:
        await broker.notify(S)
        assert await asyncio.wait_for(anext(first), 5.0) == S
        assert await asyncio.wait_for(anext(second), 5.0) == S


# streams are independent


async def test_streams_are_independent(broker: Broker) -> None:
    a = await _append(broker, 1, 2, stream="a")
    b = await _append(broker, 3, stream="b")
    assert offsets_of(await broker.read("a", ZERO_OFFSET, 10)) == a
    assert [e.outbox_id for e in await broker.read("b", ZERO_OFFSET, 10)] == [3]
    assert (await broker.read("b", ZERO_OFFSET, 10))[0].prev == ZERO_OFFSET
    assert (await broker.head("b")).last == b[0]
    assert (await broker.head("a")).first == a[0]


# lifecycle


async def test_ping_answers(broker: Broker) -> None:
    await broker.ping()


async def test_aclose_wakes_a_blocked_wait_and_ends_notifications(broker: Broker) -> None:
    async with broker.notifications() as names:
        waiter = asyncio.create_task(broker.wait(S, ZERO_OFFSET, 10, 30.0))
        listener = asyncio.create_task(anext(names, "ended"))
        assert await still_pending(waiter)
        await broker.aclose()
        assert await asyncio.wait_for(waiter, 2.0) == []
        assert await asyncio.wait_for(listener, 2.0) == "ended"
    await broker.aclose()  # idempotent


async def test_operations_after_aclose_raise_broker_error(broker: Broker) -> None:
    await broker.aclose()
    with pytest.raises(BrokerError):
        await broker.ping()
    with pytest.raises(BrokerError):
        await broker.read(S, ZERO_OFFSET, 10)
    with pytest.raises(BrokerError):
        await broker.wait(S, ZERO_OFFSET, 10, 1.0)
    with pytest.raises(BrokerError):
        await broker.acquire_lease(S, "relay-1", TTL)
