"""Behaviour only the memory broker has: per-process epochs, exact retention, its own id clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.broker import memory as memory_module
from gateway.broker.continuity import ZERO_OFFSET, offset_key
from gateway.broker.memory import MemoryBroker

from . import offsets_of, records

S = "todos"


async def test_every_instance_has_its_own_epochs() -> None:
    """A restarted process is a new instance: its subscribers must learn that history was lost."""
    async with MemoryBroker() as first, MemoryBroker() as second:
        assert (await first.head(S)).epoch != (await second.head(S)).epoch
        assert (await first.head(S)).epoch != (await first.head("other")).epoch


async def test_length_retention_is_exact() -> None:
    async with MemoryBroker(stream_maxlen=200) as broker:
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        offsets: list[str] = []
        for start in range(0, 1000, 30):
            offsets += await broker.append(S, records(*range(start, start + 30)), lease=lease)
        kept = await broker.read(S, ZERO_OFFSET, 10_000)
        assert offsets_of(kept) == offsets[-200:]
        assert kept[0].prev == offsets[-201]
        head = await broker.head(S)
        assert (head.first, head.last) == (offsets[-200], offsets[-1])


async def test_reads_stay_right_while_trimmed_entries_are_compacted() -> None:
    async with MemoryBroker(stream_maxlen=10) as broker:
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        offsets = [(await broker.append(S, records(n), lease=lease))[0] for n in range(5000)]
        assert offsets_of(await broker.read(S, ZERO_OFFSET, 100)) == offsets[-10:]
        assert offsets_of(await broker.read(S, offsets[-5], 100)) == offsets[-4:]
        assert offsets_of(await broker.tail(S, 3)) == offsets[-3:]


async def test_offsets_increase_even_when_the_clock_goes_back() -> None:
    clock = iter([5.0, 5.0, 4.0, 6.0])
    async with MemoryBroker(clock=lambda: next(clock)) as broker:
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        offsets = await broker.append(S, records(1, 2, 3, 4), lease=lease)
    assert offsets == ["5000-0", "5000-1", "5000-2", "6000-0"]
    assert [offset_key(o) for o in offsets] == sorted(offset_key(o) for o in offsets)


async def test_trim_is_exact_by_append_time() -> None:
    clock = iter(float(n) for n in range(1, 100))  # one entry per second: 1 s, 2 s, ...
    async with MemoryBroker(clock=lambda: next(clock)) as broker:
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        offsets = await broker.append(S, records(*range(10)), lease=lease)
        await broker.trim(S, older_than=4.0)
        assert offsets_of(await broker.read(S, ZERO_OFFSET, 100)) == offsets[3:]  # 4 s and later
        await broker.trim(S, older_than=1000.0)
        assert offsets_of(await broker.read(S, ZERO_OFFSET, 100)) == offsets[-1:]


async def test_a_listener_that_falls_behind_loses_notifications_not_the_notifier() -> None:
    async with MemoryBroker() as broker, broker.notifications() as names:
        for _ in range(memory_module.LISTENER_QUEUE_SIZE + 10):
            await broker.notify(S)  # never blocks, never raises
        await broker.aclose()
        assert 0 < len([name async for name in names]) <= memory_module.LISTENER_QUEUE_SIZE


async def test_stream_maxlen_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stream_maxlen"):
        MemoryBroker(stream_maxlen=0)


async def test_a_lease_ttl_must_be_positive() -> None:
    async with MemoryBroker() as broker:
        with pytest.raises(ValueError, match="ttl"):
            await broker.acquire_lease(S, "relay-1", 0)


async def test_wait_is_woken_by_an_append_on_its_stream_only() -> None:
    async with MemoryBroker() as broker:
        lease_other = await broker.acquire_lease("other", "relay-1", 30.0)
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        assert lease_other is not None
        waiter = asyncio.create_task(broker.wait(S, ZERO_OFFSET, 10, 30.0))
        await broker.append("other", records(1), lease=lease_other)
        done, _ = await asyncio.wait({waiter}, timeout=0.1)
        assert not done
        offsets = await broker.append(S, records(2), lease=lease)
        assert offsets_of(await asyncio.wait_for(waiter, 1.0)) == offsets
