"""Stopping tasks that take a cancellation back (gateway/tasks.py).

Found in CI: the suite's teardown hung past its timeout on a relay whose lease loop had been cancelled
during a Redis command and carried on (Python 3.11's `wait_for`, inside redis-py, returned the command's
reply instead of the cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from gateway.broker.base import BrokerError
from gateway.broker.factory import broker_from_url
from gateway.tasks import cancel_and_wait

LOOPS = 150


async def test_a_task_that_takes_its_first_cancellation_back_is_cancelled_again() -> None:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                break  # a library's way of losing the cancellation: the loop goes on
        while True:
            await asyncio.sleep(1)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait([task], grace=0.05)
    assert task.cancelled()


async def test_exceptions_of_the_tasks_are_retrieved_not_raised() -> None:
    async def failing() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await cancel_and_wait([task, None])
    assert isinstance(task.exception(), ValueError)


async def test_loops_of_redis_commands_cancelled_at_any_moment_all_end(
    redis_url: str, redis_prefix: str
) -> None:
    """The relay's lease loop, shape for shape, on the real Redis, cancelled at random moments: every loop
    ends (with one `cancel()` and a wait, about one in six carried on)."""
    broker = broker_from_url(redis_url, prefix=redis_prefix, stream_maxlen=None)
    lease = await broker.acquire_lease("Todo", "tests", 30.0)
    assert lease is not None

    async def lease_loop() -> None:
        while True:
            with contextlib.suppress(BrokerError):
                await broker.renew_lease(lease, 30.0)
            await asyncio.sleep(0.5)

    rng = random.Random(16)
    try:
        for _ in range(LOOPS):
            task = asyncio.create_task(lease_loop())
            await asyncio.sleep(rng.random() * 0.002)
            async with asyncio.timeout(5):
                await cancel_and_wait([task], grace=0.05)
            assert task.cancelled()
    finally:
        await broker.aclose()
