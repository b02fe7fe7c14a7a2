"""Limits that hold across all workers: write rate, open streams, ticket issuance (body size is a middleware).

Counters live in the security store: Redis when Redis is the broker, so N workers share one budget; memory
with the memory broker. Rates are fixed one-second (writes) and one-minute (tickets) windows, keyed by the
principal, or by the client address for anonymous requests. Open streams are a set of slots per principal;
each worker refreshes the slots of its open streams, so slots of a worker that died lapse within
`SLOT_TTL` seconds. A slot whose release fails (the store busy or away: 2,000 streams closing at once can
wait past the pool's timeout) is released again in the background until it succeeds or the slot has
lapsed, so a principal's slots come back at once, not after `SLOT_TTL`. A limit of 0 is no limit. A store
that cannot be reached fails the request (503), never waves it through.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable

from gateway.rest.errors import LoopBackError
from gateway.security.store import SecurityStore, StoreError
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.security")

SLOT_TTL = 60.0
"""Seconds a stream slot lives without a refresh; its holder refreshes every third of that."""

RELEASE_RETRY_FIRST = 0.05
RELEASE_RETRY_MAX = 2.0
"""Seconds between retries of a failed slot release: the first, and the most after backing off."""

Release = Callable[[], Awaitable[None]]


def limit_key(principal_id: str | None, client_host: str | None) -> str:
    """A short, opaque store key for whoever is asking (never the raw subject, which may be long or odd)."""
    if principal_id is not None:
        return "u:" + hashlib.sha256(principal_id.encode()).hexdigest()[:32]
    return "ip:" + (client_host or "unknown")


def too_many(message: str, retry_after: int, code: str) -> LoopBackError:
    return LoopBackError(429, message, code=code, headers={"Retry-After": str(max(1, retry_after))})


def store_unavailable() -> LoopBackError:
    return LoopBackError(503, "The security store is unavailable; retry", headers={"Retry-After": "2"})


class Limits:
    def __init__(
        self,
        store: SecurityStore,
        *,
        writes_per_second: int = 0,
        streams_per_principal: int = 0,
        tickets_per_minute: int = 0,
    ) -> None:
        self._store = store
        self.writes_per_second = writes_per_second
        self.streams_per_principal = streams_per_principal
        self.tickets_per_minute = tickets_per_minute
        self._held: dict[str, set[str]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._unreleased: dict[tuple[str, str], float] = {}
        """Slots whose release failed, by (store key, member), with the time they lapse by themselves."""
        self._releaser: asyncio.Task[None] | None = None

    async def count_write(self, key: str) -> None:
        """Raise 429 when `key` made more than its writes this second."""
        if not self.writes_per_second:
            return
        second = int(time.time())
        count = await self._hit(f"rate:w:{key}:{second}", 2.0)
        if count > self.writes_per_second:
            raise too_many(f"More than {self.writes_per_second} writes per second", 1, "TOO_MANY_REQUESTS")

    async def count_ticket(self, key: str) -> None:
        if not self.tickets_per_minute:
            return
        now = time.time()
        minute = int(now // 60)
        count = await self._hit(f"rate:t:{key}:{minute}", 61.0)
        if count > self.tickets_per_minute:
            retry = math.ceil((minute + 1) * 60 - now)
            raise too_many(
                f"More than {self.tickets_per_minute} stream tickets per minute", retry, "TOO_MANY_REQUESTS"
            )

    async def open_stream(self, key: str) -> Release | None:
        """Take one of `key`'s stream slots (429 when all are taken); returns how to give it back."""
        if not self.streams_per_principal:
            return None
        member = uuid.uuid4().hex
        try:
            taken = await self._store.acquire(f"streams:{key}", member, self.streams_per_principal, SLOT_TTL)
        except StoreError:
            raise store_unavailable() from None
        if not taken:
            raise too_many(
                f"This principal already has {self.streams_per_principal} open streams", 5, "TOO_MANY_STREAMS"
            )
        self._held.setdefault(key, set()).add(member)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh(), name="stream-slot-refresher")

        async def release() -> None:
            held = self._held.get(key)
            if held is not None:
                held.discard(member)
                if not held:
                    del self._held[key]
            try:
                await self._store.release(f"streams:{key}", member)
            except StoreError as exc:
                log.warning("cannot release a stream slot now, retrying: %s", exc)
                self._release_later(f"streams:{key}", member)

        return release

    async def aclose(self) -> None:
        await cancel_and_wait([self._refresher, self._releaser])
        self._refresher = self._releaser = None

    def _release_later(self, store_key: str, member: str) -> None:
        self._unreleased[(store_key, member)] = time.monotonic() + SLOT_TTL
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._retry_releases(), name="stream-slot-releaser")

    async def _retry_releases(self) -> None:
        """Release the failed slots again, backing off from 50 ms to 2 s while the store keeps failing."""
        delay = RELEASE_RETRY_FIRST
        while self._unreleased:
            await asyncio.sleep(delay)
            failed = False
            for slot, lapses in list(self._unreleased.items()):
                if time.monotonic() < lapses:
                    try:
                        await self._store.release(*slot)
                    except StoreError as exc:
                        failed = True
                        log.debug("stream slot release retry failed: %s", exc)
                        continue
                else:
                    log.warning("a stream slot could not be released before it lapsed by itself")
                del self._unreleased[slot]
            delay = min(delay * 2, RELEASE_RETRY_MAX) if failed else RELEASE_RETRY_FIRST

    async def _hit(self, key: str, window: float) -> int:
        try:
            return await self._store.hit(key, window)
        except StoreError:
            raise store_unavailable() from None

    async def _refresh(self) -> None:
        while self._held:
            await asyncio.sleep(SLOT_TTL / 3)
            for key, members in list(self._held.items()):
                try:
                    await self._store.refresh(f"streams:{key}", list(members), SLOT_TTL)
                except StoreError as exc:
                    log.warning("cannot refresh stream slots: %s", exc)
