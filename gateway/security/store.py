"""Shared state for tickets and limits: a few atomic single-key operations, in Redis or in memory.

The Redis store shares the broker's Redis (and its client), so every worker on every host sees the same
tickets and counters; the memory store serves one process, like the memory broker it goes with. Every key is
one Redis key (hash-tag free), so Cluster needs nothing special; every operation is one atomic command or
script, so two workers never both redeem one ticket or both take the last stream slot.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.exceptions import RedisError

from gateway.broker.base import Broker
from gateway.broker.redis import RedisBroker, RedisClient

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class StoreError(Exception):
    """The store could not be reached; callers fail closed (503), never open."""


class SecurityStore(Protocol):
    """Atomic operations on short-lived keys (names are relative; the store adds its prefix)."""

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Return and delete the value in one step (GETDEL): exactly one caller ever gets it."""
        ...

    async def hit(self, key: str, window: float) -> int:
        """Count one event in the fixed window that `key` names; returns the count so far."""
        ...

    async def acquire(self, key: str, member: str, limit: int, ttl: float) -> bool:
        """Add `member` to the set `key` unless it already holds `limit` live members; members not refreshed
        within `ttl` seconds are dropped (a worker that died does not hold slots for ever)."""
        ...

    async def refresh(self, key: str, members: list[str], ttl: float) -> None:
        """Keep `members` alive for another `ttl` seconds."""
        ...

    async def release(self, key: str, member: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """One process's store (with the memory broker). Expiry follows the monotonic clock."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._sets: dict[str, dict[str, float]] = {}

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._sweep()
        self._values[key] = (value, time.monotonic() + ttl)

    async def take(self, key: str) -> bytes | None:
        item = self._values.pop(key, None)
        if item is None or item[1] <= time.monotonic():
            return None
        return item[0]

    async def hit(self, key: str, window: float) -> int:
        now = time.monotonic()
        count, until = self._counters.get(key, (0, 0.0))
        if until <= now:
            self._sweep()
            count, until = 0, now + window
        self._counters[key] = (count + 1, until)
        return count + 1

    async def acquire(self, key: str, member: str, limit: int, ttl: float) -> bool:
        now = time.monotonic()
        members = {m: t for m, t in self._sets.get(key, {}).items() if t > now}
        if len(members) >= limit:
            self._sets[key] = members
            return False
        members[member] = now + ttl
        self._sets[key] = members
        return True

    async def refresh(self, key: str, members: list[str], ttl: float) -> None:
        held = self._sets.get(key)
        if held is not None:
            until = time.monotonic() + ttl
            for member in members:
                if member in held:
                    held[member] = until

    async def release(self, key: str, member: str) -> None:
        held = self._sets.get(key)
        if held is not None:
            held.pop(member, None)
            if not held:
                del self._sets[key]

    async def aclose(self) -> None:
        self._values.clear()

    def _sweep(self) -> None:
        """Drop expired tickets and counters (amortised: runs when new ones are made)."""
        now = time.monotonic()
        if len(self._values) > 1024:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        if len(self._counters) > 1024:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}


class RedisStore:
    """The cluster-wide store, on the broker's Redis client (which the broker owns and closes)."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}:sec:"
        self._acquire = client.register_script(_ACQUIRE)
        self._hit = client.register_script(_HIT)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            raise StoreError(f"cannot store: {type(exc).__name__}") from None

    async def take(self, key: str) -> bytes | None:
        try:
            value = await self._client.getdel(self._prefix + key)
        except RedisError as exc:
            raise StoreError(f"cannot read: {type(exc).__name__}") from None
        return value if isinstance(value, bytes) else None

    async def hit(self, key: str, window: float) -> int:
        try:
            return int(await self._hit(keys=[self._prefix + key], args=[max(1, int(window * 1000))]))
        except RedisError as exc:
            raise StoreError(f"cannot count: {type(exc).__name__}") from None

    async def acquire(self, key: str, member: str, limit: int, ttl: float) -> bool:
        try:
            taken = await self._acquire(keys=[self._prefix + key], args=[time.time(), ttl, limit, member])
        except RedisError as exc:
            raise StoreError(f"cannot count streams: {type(exc).__name__}") from None
        return bool(taken)

    async def refresh(self, key: str, members: list[str], ttl: float) -> None:
        until = time.time() + ttl
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zadd(self._prefix + key, dict.fromkeys(members, until), xx=True)
                pipe.pexpire(self._prefix + key, int(ttl * 1000))
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"cannot refresh: {type(exc).__name__}") from None

    async def release(self, key: str, member: str) -> None:
        try:
            await self._client.zrem(self._prefix + key, member)
        except RedisError as exc:
            raise StoreError(f"cannot release: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        """Nothing to close: the broker owns the client."""


def store_for(broker: Broker, prefix: str) -> SecurityStore:
    """The Redis store when the broker is Redis (cluster-wide), else the memory store (one process)."""
    if isinstance(broker, RedisBroker):
        return RedisStore(broker.client, prefix)
    return MemoryStore()
