"""Tests of `gateway.broker`, and helpers their modules share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from gateway.broker.base import Broker, Record, StreamHead
from gateway.broker.continuity import ZERO_OFFSET
from tests.polling import eventually as eventually  # re-exported for the tests of this package


def records(*outbox_ids: int, before: bytes | None = None) -> list[Record]:
    """One record per outbox id; the change names its id so entries can be told apart."""
    return [
        Record(outbox_id=oid, change=b'{"id":%d}' % oid, before=before, committed_at=time.time())
        for oid in outbox_ids
    ]


async def still_pending(task: asyncio.Task[Any], seconds: float = 0.2) -> bool:
    """True if `task` has not finished within `seconds` (the one thing only a duration can show)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


async def exercise(broker: Broker, stream: str = "todos") -> None:
    """A short end-to-end run of every operation, for deployments the conformance suite does not cover
    (Sentinel, Cluster)."""
    await broker.ping()
    head = await broker.head(stream)
    assert head.last == ZERO_OFFSET
    lease = await broker.acquire_lease(stream, "relay-1", 5.0)
    assert lease is not None
    assert await broker.acquire_lease(stream, "relay-2", 5.0) is None
    waiter = asyncio.create_task(broker.wait(stream, ZERO_OFFSET, 10, 10.0))
    assert await still_pending(waiter)
    offsets = await broker.append(stream, records(1, 2, 3), lease=lease)
    woken = await asyncio.wait_for(waiter, 5.0)
    assert [entry.offset for entry in woken] == offsets
    assert [entry.epoch for entry in woken] == [head.epoch] * 3
    assert await broker.read(stream, offsets[0], 10) == woken[1:]
    assert await broker.tail(stream, 2) == woken[1:]
    assert await broker.head(stream) == StreamHead(head.epoch, offsets[0], offsets[-1])
    await broker.trim(stream, older_than=time.time() + 60)
    assert (await broker.tail(stream, 1))[0].offset == offsets[-1]
    assert await broker.renew_lease(lease, 5.0)
    await broker.release_lease(lease)
    async with broker.notifications() as names:
        await broker.notify(stream)
        assert await asyncio.wait_for(anext(names), 5.0) == stream


def offsets_of(entries: Sequence[Any]) -> list[str]:
    return [entry.offset for entry in entries]
