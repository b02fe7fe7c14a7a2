"""A stream slot whose release fails is released again, so the principal's slots come back at once.

Seen under load: 2,000 streams of one principal closing together waited past the Redis pool's timeout for
a connection, and the slots whose release failed stayed taken until they lapsed (`SLOT_TTL`, 60 s).
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import BlockingConnectionPool, Redis

from gateway.security.limits import Limits
from gateway.security.store import RedisStore


async def test_a_release_that_finds_the_pool_busy_is_retried_until_it_lands(
    redis_url: str, redis_prefix: str
) -> None:
    busy = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.2))
    observer = Redis.from_url(redis_url)
    limits = Limits(RedisStore(busy, redis_prefix), streams_per_principal=5)
    slots = f"{redis_prefix}:sec:streams:alice"
    try:
        release = await limits.open_stream("alice")
        assert release is not None
        assert await observer.zcard(slots) == 1
        holder = asyncio.create_task(busy.blpop([f"{redis_prefix}:never"], timeout=1))  # the one connection
        await asyncio.sleep(0.05)
        await release()  # waits 0.2 s for a connection, then fails
        assert await observer.zcard(slots) == 1
        await holder
        given_back = time.monotonic()
        while await observer.zcard(slots) and time.monotonic() - given_back < 5:
            await asyncio.sleep(0.02)
        assert await observer.zcard(slots) == 0
    finally:
        await limits.aclose()
        await busy.aclose()
        await busy.connection_pool.disconnect()
        await observer.aclose()
