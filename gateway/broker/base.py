"""The event log every worker shares: one append-only stream per model.

Two implementations sit beside this module: `memory.py` (one process, the `make run` default) and `redis.py`
(Redis Streams, for many workers on many hosts). Both honour the contract written on each method here, and
one conformance suite (`tests/broker/test_conformance.py`) holds them to it.

Only the relay appends, and it does so under a lease, so each stream has one ordered publisher; readers never
write. Entries carry the offset of the entry before them (`prev`), so a reader can prove it saw every entry:
a resume whose first replayed entry does not point back at the resume offset has a gap (trimmed history),
and an entry whose epoch differs from the reader's means the stream's history was lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


class BrokerError(Exception):
    """The broker could not be reached or refused the operation; the message never contains credentials."""


class LeaseLost(BrokerError):
    """The caller's lease on a stream has expired or been taken over; it must stop publishing."""


@dataclass(frozen=True, slots=True)
class Record:
    """One change for the relay to append."""

    outbox_id: int
    change: bytes  # the client-facing change object, already JSON-encoded, key order fixed
    before: bytes | None  # the row before the write (internal: lets filtered subscribers see a row leave)
    committed_at: float  # Unix time of the commit, for commit-to-client latency


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored entry of a stream."""

    offset: str
    prev: str  # offset of the entry before this one when it was appended; ZERO_OFFSET for the first
    epoch: str
    outbox_id: int
    change: bytes
    before: bytes | None
    committed_at: float


@dataclass(frozen=True, slots=True)
class StreamHead:
    """A stream's epoch and the offsets of its oldest and newest retained entries."""

    epoch: str
    first: str | None  # None when the stream holds nothing
    last: str  # ZERO_OFFSET when nothing was ever appended in this epoch


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to append to one stream, held by one relay until it expires."""

    stream: str
    holder: str
    token: str


class Broker(Protocol):
    """A set of named, append-only, trimmed streams with epochs, leases and a wake-up channel."""

    async def append(self, stream: str, records: Sequence[Record], *, lease: Lease) -> list[str]:
        """Append `records` in order and return their offsets.

        Atomic: all records are appended, or none. Fenced: nothing is appended unless `lease` is still the
        stream's current lease (raises `LeaseLost`), so a relay that stalled past its lease cannot interleave
        with its successor. Offsets strictly increase within a stream; each entry's `prev` is the offset of
        the entry appended before it. Creates the stream (and its epoch) if needed, and applies the
        configured length retention (approximately).

        A retried call whose first attempt did land (a lost reply) is recognised when the newest entries
        carry exactly this batch's outbox ids, and returns their offsets without appending again. Anything
        less certain (a `BrokerError` after which the caller cannot know) is for the caller to reconcile
        with `tail()`.
        """
        ...

    async def read(self, stream: str, after: str, count: int) -> list[Entry]:
        """Up to `count` entries with offsets strictly greater than `after`, oldest first (no blocking)."""
        ...

    async def wait(self, stream: str, after: str, count: int, timeout: float) -> list[Entry]:  # noqa: ASYNC109
        """Like `read`, but when nothing is there yet, wait up to `timeout` seconds for an append.

        Returns [] on timeout. Safe to cancel.
        """
        ...

    async def head(self, stream: str) -> StreamHead:
        """The stream's epoch and retained range. Creates the epoch if the stream has none yet, so two
        callers asking about an empty stream agree on its epoch."""
        ...

    async def tail(self, stream: str, count: int) -> list[Entry]:
        """The newest `count` entries, oldest first (the relay reconciles its last batch with it)."""
        ...

    async def trim(self, stream: str, *, older_than: float) -> None:
        """Drop entries committed before Unix time `older_than` (approximately; never the newest)."""
        ...

    async def acquire_lease(self, stream: str, holder: str, ttl: float) -> Lease | None:
        """Take the stream's lease for `ttl` seconds if nobody holds it; None if someone does."""
        ...

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        """Extend a lease still held; False if it was lost (expired and possibly taken)."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give a lease up at once (graceful shutdown), if still held."""
        ...

    async def notify(self, stream: str) -> None:
        """Tell every relay, in every process, that `stream` has new outbox rows. Best effort."""
        ...

    def notifications(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Subscribe to `notify` calls: yields stream names. Notifications sent while nobody listened are
        lost, so listeners must also poll."""
        ...

    async def ping(self) -> None:
        """Raise `BrokerError` unless the broker answers."""
        ...

    async def aclose(self) -> None:
        """Release connections and wake any `wait` callers."""
        ...
