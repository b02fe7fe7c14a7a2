"""`LeanEvent` behaves as `asyncio.Event` for what uvicorn does with its events, and holds no waiter list
while nobody waits (what an idle connection's events cost)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.ops.leanevent import LeanEvent


async def _wait(event: LeanEvent) -> bool:
    return await event.wait()


async def _waiting(event: LeanEvent, count: int) -> list[asyncio.Task[bool]]:
    tasks = [asyncio.create_task(_wait(event)) for _ in range(count)]
    await asyncio.sleep(0)
    return tasks


async def test_set_wakes_every_waiter_and_stays_set_until_cleared() -> None:
    event = LeanEvent()
    waiters = await _waiting(event, 3)
    assert not any(task.done() for task in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert event.is_set()
    assert await event.wait() is True  # no waiting while set
    event.clear()
    assert not event.is_set()
    late = await _waiting(event, 1)
    assert not late[0].done()
    event.set()
    assert await late[0] is True


async def test_no_waiter_list_while_nobody_waits() -> None:
    event = LeanEvent()
    assert event._waiters is None
    waiters = await _waiting(event, 2)
    assert event._waiters is not None
    assert len(event._waiters) == 2
    event.set()
    await asyncio.gather(*waiters)
    assert event._waiters is None


async def test_a_cancelled_waiter_leaves_and_the_others_still_wake() -> None:
    event = LeanEvent()
    gone, stays = await _waiting(event, 2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert event._waiters is not None
    assert len(event._waiters) == 1
    event.set()
    assert await stays is True
    assert event._waiters is None


async def test_set_then_clear_before_the_waiter_runs_still_wakes_it() -> None:
    """As asyncio.Event: a waiter woken by `set` returns True even if `clear` follows at once (uvicorn's
    `receive` clears right after its wait returns)."""
    event = LeanEvent()
    (waiter,) = await _waiting(event, 1)
    event.set()
    event.clear()
    assert await waiter is True
