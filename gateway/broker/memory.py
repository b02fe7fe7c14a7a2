"""The embedded broker: every stream lives in this process's memory.

Use it for `make run`, tests and single-process deployments. It serves exactly one process: two workers
started with it would each have their own streams and never see each other's changes, so anything that runs
more than one worker must use `RedisBroker` (Redis Streams) instead.

It keeps the Redis broker's semantics so that the conformance suite holds both to one contract: offsets are
`<ms>-<seq>` ids made like Redis makes them (strictly increasing even if the wall clock steps back), each
stream's epoch is created on first use, so a restarted process reports new epochs and its subscribers are
told honestly that history was lost, and leases expire on the event loop's monotonic clock. Length retention
is exact here, where Redis's `MAXLEN ~` is approximate.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from bisect import bisect_left, bisect_right
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from gateway.broker.base import BrokerError, Entry, Lease, LeaseLost, Record, StreamHead
from gateway.broker.continuity import ZERO_OFFSET, new_epoch, offset_key

LISTENER_QUEUE_SIZE = 1024
"""Notifications a listener may have pending; later ones are dropped (listeners poll anyway)."""

_COMPACT_AFTER = 1024
"""Trimmed entries kept in a stream's list before they are really deleted (amortises the list shift)."""


@dataclass(slots=True)
class _Stream:
    """One stream: a list of entries with a moving start index, so trimming the front is cheap."""

    epoch: str
    entries: list[Entry] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)  # offset_key of each entry, for bisect
    start: int = 0  # entries before this index are trimmed
    last_id: tuple[int, int] = (0, 0)
    appended: asyncio.Event = field(default_factory=asyncio.Event)  # replaced by a fresh one on every append
    lease: tuple[str, float] | None = None  # (token, loop time it expires)

    def next_id(self, now: float) -> tuple[int, int]:
        ms = int(now * 1000)
        last_ms, last_seq = self.last_id
        self.last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self.last_id

    def retained(self) -> int:
        return len(self.entries) - self.start

    def newest(self) -> Entry | None:
        return self.entries[-1] if self.retained() else None

    def after(self, offset: str, count: int) -> list[Entry]:
        index = bisect_right(self.keys, offset_key(offset), lo=self.start)
        return self.entries[index : index + count]

    def drop_front(self, new_start: int) -> None:
        self.start = max(self.start, new_start)
        if self.start >= _COMPACT_AFTER and self.start * 2 >= len(self.entries):
            del self.entries[: self.start]
            del self.keys[: self.start]
            self.start = 0


class MemoryBroker:
    """A `Broker` for one process. Not shared between processes: use `RedisBroker` to scale out."""

    def __init__(
        self, *, stream_maxlen: int | None = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        """`stream_maxlen`: entries kept per stream (exactly), None for no length limit. `clock`: Unix time
        in seconds, the source of offsets (tests pass one that steps backwards)."""
        if stream_maxlen is not None and stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be at least 1 or None, not {stream_maxlen}")
        self._maxlen = stream_maxlen
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._listeners: set[asyncio.Queue[str | None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryBroker(streams={len(self._streams)}, stream_maxlen={self._maxlen})"

    async def __aenter__(self) -> MemoryBroker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _stream(self, name: str) -> _Stream:
        if self._closed:
            raise BrokerError("the memory broker is closed")
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(epoch=new_epoch())
        return stream

    async def append(self, stream: str, records: Sequence[Record], *, lease: Lease) -> list[str]:
        target = self._stream(stream)
        if lease.stream != stream or not self._holds(target, lease.token):
            raise LeaseLost(f"the lease on stream {stream!r} is not held by {lease.holder!r}")
        replayed = self._replayed(target, records)
        if replayed is not None:
            return replayed
        newest = target.newest()
        prev = newest.offset if newest is not None else ZERO_OFFSET
        offsets: list[str] = []
        for record in records:
            key = target.next_id(self._clock())
            offset = f"{key[0]}-{key[1]}"
            target.entries.append(
                Entry(
                    offset=offset,
                    prev=prev,
                    epoch=target.epoch,
                    outbox_id=record.outbox_id,
                    change=record.change,
                    before=record.before,
                    committed_at=record.committed_at,
                )
            )
            target.keys.append(key)
            offsets.append(offset)
            prev = offset
        if self._maxlen is not None and target.retained() > self._maxlen:
            target.drop_front(len(target.entries) - self._maxlen)
        if records:
            target.appended.set()
            target.appended = asyncio.Event()
        return offsets

    @staticmethod
    def _replayed(stream: _Stream, records: Sequence[Record]) -> list[str] | None:
        """The offsets of `records` if they are already the newest entries (same guard as append.lua)."""
        if not records or stream.retained() < len(records):
            return None
        newest = stream.entries[len(stream.entries) - len(records) :]
        if [entry.outbox_id for entry in newest] != [record.outbox_id for record in records]:
            return None
        return [entry.offset for entry in newest]

    async def read(self, stream: str, after: str, count: int) -> list[Entry]:
        _check_count(count)
        return self._stream(stream).after(after, count)

    async def wait(self, stream: str, after: str, count: int, timeout: float) -> list[Entry]:  # noqa: ASYNC109
        _check_count(count)
        target = self._stream(stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            entries = target.after(after, count)
            if entries or self._closed:
                return [] if self._closed else entries
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                async with asyncio.timeout(remaining):
                    await target.appended.wait()
            except TimeoutError:
                return []

    async def head(self, stream: str) -> StreamHead:
        target = self._stream(stream)
        newest = target.newest()
        first = target.entries[target.start].offset if newest is not None else None
        return StreamHead(target.epoch, first, newest.offset if newest is not None else ZERO_OFFSET)

    async def tail(self, stream: str, count: int) -> list[Entry]:
        _check_count(count)
        target = self._stream(stream)
        return target.entries[max(target.start, len(target.entries) - count) :]

    async def trim(self, stream: str, *, older_than: float) -> None:
        """Drop entries appended before `older_than` (by their offset's time, as Redis does), except the
        newest. Entries are appended after their commit, so none committed since `older_than` is dropped."""
        target = self._stream(stream)
        if target.retained():
            cut = bisect_left(target.keys, (max(0, int(older_than * 1000)), 0), lo=target.start)
            target.drop_front(min(cut, len(target.entries) - 1))

    def _holds(self, stream: _Stream, token: str) -> bool:
        if stream.lease is None:
            return False
        held_by, expires = stream.lease
        return held_by == token and expires > asyncio.get_running_loop().time()

    async def acquire_lease(self, stream: str, holder: str, ttl: float) -> Lease | None:
        _check_ttl(ttl)
        target = self._stream(stream)
        now = asyncio.get_running_loop().time()
        if target.lease is not None and target.lease[1] > now:
            return None
        token = secrets.token_hex(16)
        target.lease = (token, now + ttl)
        return Lease(stream=stream, holder=holder, token=token)

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        _check_ttl(ttl)
        target = self._stream(lease.stream)
        if not self._holds(target, lease.token):
            return False
        target.lease = (lease.token, asyncio.get_running_loop().time() + ttl)
        return True

    async def release_lease(self, lease: Lease) -> None:
        target = self._stream(lease.stream)
        if target.lease is not None and target.lease[0] == lease.token:
            target.lease = None

    async def notify(self, stream: str) -> None:
        if self._closed:
            raise BrokerError("the memory broker is closed")
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):  # best effort: that listener polls anyway
                queue.put_nowait(stream)

    @contextlib.asynccontextmanager
    async def notifications(self) -> AsyncIterator[AsyncIterator[str]]:
        """Notifications sent after entering; the iterator ends when the broker is closed."""
        if self._closed:
            raise BrokerError("the memory broker is closed")
        queue: asyncio.Queue[str | None] = asyncio.Queue(LISTENER_QUEUE_SIZE)
        self._listeners.add(queue)
        names = _drain(queue)
        try:
            yield names
        finally:
            self._listeners.discard(queue)
            await names.aclose()

    async def ping(self) -> None:
        if self._closed:
            raise BrokerError("the memory broker is closed")

    async def aclose(self) -> None:
        """Wake every `wait` (it returns []) and end every notification iterator. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for stream in self._streams.values():
            stream.appended.set()
        for queue in self._listeners:
            while queue.full():
                queue.get_nowait()
            queue.put_nowait(None)


async def _drain(queue: asyncio.Queue[str | None]) -> AsyncGenerator[str, None]:
    while (name := await queue.get()) is not None:
        yield name


def _check_count(count: int) -> None:
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a lease ttl must be positive, not {ttl}")
