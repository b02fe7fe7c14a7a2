"""The relay: publishes committed outbox rows to their model's stream, in outbox order, exactly once.

Every worker runs one; for each stream, only the worker holding that stream's broker lease publishes, so each
stream has a single ordered publisher, and another worker takes over within a lease period when the holder
dies. Appends are fenced by the lease (a relay that stalled past its lease cannot append), and a relay that
cannot be sure whether its last append landed (a broker timeout, a crash, a failed mark, a new lease) first
*reconciles*: it reads the stream's tail and marks the outbox rows found there as published. Together these
make publishing idempotent: nothing committed is lost, nothing is appended twice.

Latency: a write wakes the relay in its own process directly and the others through the broker's wake-up
channel (sent from a task of the relay: a write never waits for the broker); a slow poll covers wake-ups lost
while a connection was down.

Cost: a batch's mark travels with the next batch's read (one statement on PostgreSQL, one hop to SQLite's
thread), so each batch costs one database round trip and one append, not two and one. The rows appended and
not yet marked are known to this relay alone; they are left out of its reads and marked at the latest
`mark_delay` after the stream goes quiet. Should this relay die or lose its lease first, they are rows whose
append may have landed: the next lease holder reconciles them, as after any crash between append and mark.
A SQLite create hands its outbox rows, ids and all, to the relay of its own worker (`committed`), which
appends them without reading the outbox when nothing can lie between them and what it appended last
(`_appendable`); their marks then wait for a read, at most `mark_delay` or a batch. The read is what a
sequential create paid most for after its own hop (loadtests/RESULTS.md, sixth pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.broker.base import Broker, BrokerError, Lease, LeaseLost, Record
from gateway.changes.outbox import backlog, delete_published, mark_published, pending
from gateway.database import is_sqlite, read_transaction, write_transaction, writer_turn
from gateway.ops.metrics import Metrics
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.relay")


@dataclass(frozen=True, slots=True)
class RelaySettings:
    batch: int = 500
    poll_interval: float = 1.0
    lease_ttl: float = 5.0
    outbox_retention: float = 3600.0
    stream_max_age: float | None = None
    maintenance_interval: float = 10.0
    busy_linger: float = 0.01
    """Under load, how long to let commits gather before the next batch (see `_publish_loop`)."""
    busy_batch: int = 1
    """A round that published this many rows, and was woken again meanwhile, counts as under load. One:
    since rows committed here are appended without a read, a round costs about one append, and rounds of a
    row or two under eight writers cost more than they saved (loadtests/RESULTS.md, sixth pass)."""
    mark_delay: float = 0.05
    """How long a published batch may wait for the next read to carry its mark (see the module's "Cost")."""


class _PublishConnection:
    """The connection of the publish loop's own statements (read the pending rows, mark them published),
    each of which is atomic on its own, so each runs outside any transaction (`outbox_driver` sends them to
    the driver directly: SQLAlchemy begins none).

    It is one pooled connection, kept. On PostgreSQL taking one from the pool for each statement costs a
    pre-ping (three round trips with SQLAlchemy's asyncpg adapter) and a transaction two more, and those round
    trips sat between every commit and its change reaching the stream. On SQLite a transaction around the
    mark held the database's one write lock for four hops to aiosqlite's thread, against the writers; a
    statement on its own holds it for the statement. After an error the connection is dropped and the next
    statement takes a fresh one.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    @contextlib.asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock:
            if self._connection is None:
                self._connection = await self._connect()
            try:
                yield self._connection
                if self._connection.in_transaction():  # SQLAlchemy's autobegin, should anything use it
                    await self._connection.commit()
            except BaseException:
                await self.aclose()
                raise

    async def _connect(self) -> AsyncConnection:
        connection = await self._engine.connect()
        if is_sqlite(self._engine):
            return connection  # the driver's statements autocommit (`gateway.database`: isolation_level None)
        try:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        except BaseException:
            await connection.close()
            raise
        return connection

    async def aclose(self) -> None:
        """Drop the connection (invalidated: a cancelled statement may have left it mid-reply)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await connection.invalidate()
            await connection.close()


class Relay:
    """Owns its background tasks: `start()` them, `aclose()` to stop and hand the leases over."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        outbox: Table,
        broker: Broker,
        streams: Sequence[str],
        settings: RelaySettings,
        metrics: Metrics,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._broker = broker
        self._streams = tuple(streams)
        self._settings = settings
        self._metrics = metrics
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._leases: dict[str, Lease] = {}
        self._unsure: set[str] = set()  # streams whose last append may or may not have landed
        self._unmarked: dict[str, list[int]] = {}  # appended, their mark to ride with the stream's next read
        self._unmarked_since: dict[str, float] = {}
        self._handed: dict[str, list[Record]] = {}  # committed here, ids known: appendable unread
        self._read_up_to: dict[str, int] = {}  # the last outbox id read or appended under this lease
        self._foreign: set[str] = set()  # streams another worker has written since their last read
        self._wakeup = asyncio.Event()
        self._to_notify: set[str] = set()  # streams whose lease holder elsewhere is to be woken
        self._notify_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connection = _PublishConnection(engine)

    @property
    def leases(self) -> frozenset[str]:
        return frozenset(self._leases)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="relay-leases"),
            asyncio.create_task(self._publish_loop(), name="relay-publish"),
            asyncio.create_task(self._listen_loop(), name="relay-listen"),
            asyncio.create_task(self._notify_loop(), name="relay-notify"),
            asyncio.create_task(self._maintenance_loop(), name="relay-maintenance"),
        ]

    async def aclose(self) -> None:
        """Stop publishing and release every lease so another worker takes over at once."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._mark_unmarked()
        await self._connection.aclose()
        for lease in list(self._leases.values()):
            try:
                await self._broker.release_lease(lease)
            except BrokerError:
                log.warning("could not release the relay lease of %s; it will expire", lease.stream)
        self._leases.clear()
        self._metrics.relay_leases(0)

    async def committed(self, stream: str, records: Sequence[Record] = ()) -> None:
        """Called after a write committed changes to `stream`'s outbox, with its outbox rows when the write
        knows their ids (see `_appendable`). Never waits for the broker: the write has committed, and its
        reply must not wait out the broker's retries while Redis is down."""
        if records and stream in self._leases:
            self._handed.setdefault(stream, []).extend(records)
        self._wakeup.set()
        if stream not in self._leases:
            self._to_notify.add(stream)
            self._notify_wakeup.set()

    async def publish_pending(self, stream: str) -> int:
        """Publish every pending row of `stream` now, if this relay holds its lease; returns how many."""
        lease = self._leases.get(stream)
        if lease is None:
            return 0
        handed = self._handed.pop(stream, [])
        if handed and self._appendable(stream, handed):
            return len(handed) if await self._append(stream, lease, handed) else 0
        published = 0
        while True:
            if stream in self._unsure:
                await self._reconcile(stream)
            self._foreign.discard(stream)
            records = await self._mark_and_read(stream)
            if not records:
                return published
            if not await self._append(stream, lease, records):
                return published
            published += len(records)
            if len(records) < self._settings.batch:
                return published

    def _appendable(self, stream: str, handed: list[Record]) -> bool:
        """Whether the rows this worker committed and handed over can be appended without reading the
        outbox: they must be the very next rows after the last one this relay read or appended, with no id
        between (SQLite: its AUTOINCREMENT ids, taken under the one write lock, are consecutive in commit
        order, so no other committed row lies between), no other worker's write pending, and the marks owed
        not overdue (a read carries them). Otherwise the outbox is read as always; the handed rows are
        among what it reads."""
        last = self._read_up_to.get(stream)
        if last is None or stream in self._unsure or stream in self._foreign:
            return False
        if any(record.outbox_id != last + 1 + n for n, record in enumerate(handed)):
            return False
        owed = len(self._unmarked.get(stream, ()))
        since = self._unmarked_since.get(stream)
        overdue = since is not None and time.monotonic() - since >= self._settings.mark_delay
        return owed + len(handed) <= self._settings.batch and not overdue

    async def _append(self, stream: str, lease: Lease, records: list[Record]) -> bool:
        """Append `records`, their mark then owed; False when the lease is lost."""
        try:
            await self._broker.append(stream, records, lease=lease)
        except LeaseLost:
            log.info("lost the relay lease of %s", stream)
            self._drop_lease(stream)
            return False
        except BrokerError:
            self._unsure.add(stream)
            self._metrics.publish_failed(stream)
            raise
        self._read_up_to[stream] = records[-1].outbox_id
        self._unmarked.setdefault(stream, []).extend(r.outbox_id for r in records)
        self._unmarked_since.setdefault(stream, time.monotonic())
        self._metrics.published(stream, [r.committed_at for r in records], time.time())
        return True

    async def _mark_and_read(self, stream: str) -> list[Record]:
        """Mark the stream's last appended batch and read its next one, in one round trip. The batch stays
        unmarked here until that succeeds (its mark is idempotent, and it is left out of the read)."""
        marking = self._unmarked.get(stream, [])
        turn = writer_turn(self._engine) if marking else contextlib.nullcontext()
        async with turn, self._connection.statement() as connection:
            records = await pending(connection, self._outbox, stream, self._settings.batch, marking=marking)
        self._marked(stream)
        return records

    def _marked(self, stream: str) -> None:
        self._unmarked.pop(stream, None)
        self._unmarked_since.pop(stream, None)

    async def _mark_unmarked(self) -> None:
        """Mark every batch still waiting for its mark (on shutdown, so the next holder need not)."""
        for stream, outbox_ids in list(self._unmarked.items()):
            with contextlib.suppress(SQLAlchemyError, OSError):  # then the next holder reconciles it
                async with writer_turn(self._engine), self._connection.statement() as connection:
                    await mark_published(connection, self._outbox, outbox_ids)
                self._marked(stream)

    async def _reconcile(self, stream: str) -> None:
        """Mark as published whatever of the outbox is already at the stream's tail."""
        entries = await self._broker.tail(stream, 2 * self._settings.batch)
        outbox_ids = [entry.outbox_id for entry in entries] + self._unmarked.get(stream, [])
        async with writer_turn(self._engine), self._connection.statement() as connection:
            await mark_published(connection, self._outbox, outbox_ids)
        self._marked(stream)
        self._unsure.discard(stream)

    def _drop_lease(self, stream: str) -> None:
        self._leases.pop(stream, None)
        self._marked(stream)  # not marked: the next holder reconciles them, as every new holder does
        self._handed.pop(stream, None)
        self._read_up_to.pop(stream, None)
        self._metrics.relay_leases(len(self._leases))

    async def _lease_loop(self) -> None:
        ttl = self._settings.lease_ttl
        while True:
            for stream in self._streams:
                try:
                    await self._keep_lease(stream, ttl)
                except BrokerError as exc:
                    if stream in self._leases:
                        log.warning("cannot renew the relay lease of %s: %s", stream, exc)
                        self._drop_lease(stream)
            await asyncio.sleep(ttl / 3)

    async def _keep_lease(self, stream: str, ttl: float) -> None:
        lease = self._leases.get(stream)
        if lease is not None:
            if await self._broker.renew_lease(lease, ttl):
                return
            log.info("the relay lease of %s expired", stream)
            self._drop_lease(stream)
        acquired = await self._broker.acquire_lease(stream, self.holder, ttl)
        if acquired is not None:
            self._leases[stream] = acquired
            self._unsure.add(stream)  # the previous holder may have appended without marking
            self._metrics.relay_leases(len(self._leases))
            self._wakeup.set()

    async def _publish_loop(self) -> None:
        """Publish whenever woken (or polled). A round that published and was woken again meanwhile means
        commits are streaming in: the next round first lingers a few ms so that they share a batch. Each
        batch costs an append (and a read, unless its rows were handed over) whatever its size, and under
        saturation rounds of a few rows cost the writes more than their own outbox rows did. A system
        writing a row now and then never lingers: its next commit finds the relay waiting. A batch whose
        mark waits for the next read shortens the wait to `mark_delay`."""
        failures = 0
        published = 0
        while True:
            if published >= self._settings.busy_batch and self._wakeup.is_set():
                await asyncio.sleep(self._settings.busy_linger)
            else:
                quiet = self._settings.mark_delay if self._unmarked else self._settings.poll_interval
                try:
                    async with asyncio.timeout(quiet):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()
            published = 0
            try:
                for stream in list(self._leases):
                    published += await self.publish_pending(stream)
                failures = 0
            except (BrokerError, SQLAlchemyError, OSError) as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("relay cannot publish yet (attempt %d): %s", failures, exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))

    async def _notify_loop(self) -> None:
        """Wake the lease holders of streams written here; the writes that commit while one notification
        is on its way share the next one."""
        while True:
            await self._notify_wakeup.wait()
            self._notify_wakeup.clear()
            streams, self._to_notify = self._to_notify, set()
            for stream in streams:
                with contextlib.suppress(BrokerError):  # the lease holder's poll will find the rows
                    await self._broker.notify(stream)

    async def _listen_loop(self) -> None:
        while True:
            try:
                async with self._broker.notifications() as notifications:
                    async for stream in notifications:
                        if stream in self._leases:
                            self._foreign.add(stream)
                            self._wakeup.set()
            except BrokerError:
                await asyncio.sleep(1.0)

    async def _maintenance_loop(self) -> None:
        settings = self._settings
        while True:
            try:
                async with read_transaction(self._engine) as connection:
                    self._metrics.outbox_backlog(await backlog(connection, self._outbox))
                if settings.outbox_retention >= 0:
                    async with write_transaction(self._engine) as connection:
                        await delete_published(
                            connection, self._outbox, time.time() - settings.outbox_retention
                        )
                if settings.stream_max_age is not None:
                    for stream in list(self._leases):
                        await self._broker.trim(stream, older_than=time.time() - settings.stream_max_age)
            except (BrokerError, SQLAlchemyError, OSError) as exc:
                log.warning("relay maintenance failed: %s", exc)
            await asyncio.sleep(settings.maintenance_interval)
