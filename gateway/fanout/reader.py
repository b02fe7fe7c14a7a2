"""One reader task per model stream per worker: read the broker in batches and fan each entry out.

The reader owns the worker's cursor in the stream. It checks every entry against what it saw before
(`gateway.broker.continuity`): an entry of another epoch means the broker lost its history, an entry whose
`prev` is not the cursor means entries were trimmed before this worker read them. Either way its
subscribers are told (`event: reset`) rather than silently handed a hole, and the reader continues where
the continuity rule says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.broker.base import Broker, BrokerError, Entry
from gateway.broker.continuity import Discontinuity, chained, check_head, format_position
from gateway.fanout.group import DecodedEntry, Group, GroupKey
from gateway.fanout.queue import DeliveryQueue, State
from gateway.fanout.view import Predicate
from gateway.ops.metrics import Metrics
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.fanout")

READ_BATCH = 500
READ_BLOCK_SECONDS = 5.0
SLICE = 64  # connections written between two turns of the event loop
MAX_LINGER_SECONDS = 0.02


class StreamReader:
    """Reads one stream for this worker's subscribers; started on the first, stopped after the last."""

    def __init__(self, stream: str, id_name: str, broker: Broker, metrics: Metrics) -> None:
        self.stream = stream
        self.id_name = id_name
        self._broker = broker
        self._metrics = metrics
        self.groups: dict[GroupKey, Group] = {}
        self.epoch = ""
        self.cursor = ""
        self._task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failed = False  # the read loop died: the hub starts a new reader for new subscribers
        self.dispatching = False  # a run is being written: some connections are behind the cursor
        self.linger = 0.0  # how long the next batch waits for more entries: the last dispatch's time

    @property
    def empty(self) -> bool:
        return not self.groups

    def position(self, offset: str | None = None) -> str:
        return format_position(self.epoch, offset or self.cursor)

    async def start(self) -> None:
        """Take the stream's head as the cursor, then read from there."""
        try:
            head = await self._broker.head(self.stream)
        except asyncio.CancelledError:
            self.started.cancel()  # the connection that started it went away: a waiter starts another
            raise
        except BaseException as exc:
            self.started.set_exception(exc)
            self.started.exception()  # retrieved: waiters see it; with none, it is not "never retrieved"
            raise
        self.epoch, self.cursor = head.epoch, head.last
        self._task = asyncio.create_task(self._run(), name=f"reader-{self.stream}")
        self.started.set_result(None)

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def group(
        self, key: GroupKey, predicate_factory: Callable[[], Predicate | None], fields: tuple[str, ...] | None
    ) -> Group:
        group = self.groups.get(key)
        if group is None:
            group = Group(key, id_name=self.id_name, predicate=predicate_factory(), fields=fields)
            self.groups[key] = group
        return group

    def remove(self, group: Group, queue: DeliveryQueue) -> None:
        group.queues.pop(queue, None)
        if not group.queues and self.groups.get(group.key) is group:
            del self.groups[group.key]

    async def _run(self) -> None:
        try:
            await self._read_forever()
        except Exception:
            # A bug must not leave subscribers connected to a reader that no longer reads: end their
            # streams (they resume from history, on a fresh reader) and let the hub replace this one.
            log.exception("stream reader %s failed; ending its streams so that they resume", self.stream)
            self.failed = True
            for group in self.groups.values():
                for queue in group.queues:
                    queue.close("reader-failed")

    async def _read_forever(self) -> None:
        """Read and dispatch, batch after batch. After a dispatch that took the loop D seconds, the next
        batch waits up to D (at most `MAX_LINGER_SECONDS`) for more entries: a fan-out that costs much is
        then shared by the entries written meanwhile (one write per connection for all of them), while the
        loop is free for those writes' requests; a cheap fan-out adds next to no latency."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                entries = await self._broker.wait(self.stream, self.cursor, READ_BATCH, READ_BLOCK_SECONDS)
                if not entries:
                    await self._check_head()
                    continue
                failures = 0
                if self.linger and len(entries) < READ_BATCH:
                    await asyncio.sleep(self.linger)
                    entries += await self._broker.read(
                        self.stream, entries[-1].offset, READ_BATCH - len(entries)
                    )
            except BrokerError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("stream reader %s cannot read (attempt %d): %s", self.stream, failures, exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            started = loop.time()
            await self.dispatch(entries)
            self.linger = min(MAX_LINGER_SECONDS, loop.time() - started)

    async def _check_head(self) -> None:
        """While idle: notice a broker that lost its history (restarted empty, flushed)."""
        discontinuity = check_head(self.epoch, self.cursor, await self._broker.head(self.stream))
        if discontinuity is not None:
            self._reset_all(discontinuity)

    async def dispatch(self, entries: list[Entry]) -> None:
        """Hand `entries` to every connection, run by run (a run continues the stream; a discontinuity
        between two runs resets the subscribers there).

        Each run is framed once per group (`Group.batch`) and offered to each connection: one write per
        connection for the whole run. The connections are written `SLICE` at a time with a turn of the
        event loop in between, so a request waiting on the loop (the next POST) is not held up behind a
        thousand socket writes. The cursor is at the run's end before its first write, and only the
        connections registered then are offered it: a subscriber registering between two slices starts
        after the run and gets none of it (a resuming one replays it from the broker), one registered
        before gets all of it; meanwhile no bookmark of the cursor is sent (`dispatching`)."""
        delivered = 0
        run: list[DecodedEntry] = []
        for entry in chained(self.epoch, self.cursor, entries):
            if isinstance(entry, Discontinuity):
                delivered += await self._deliver(run)
                run = []
                self._reset_all(entry)
                continue
            run.append(DecodedEntry(entry))
            self.cursor = entry.offset
        delivered += await self._deliver(run)
        self._metrics.fanned_out(self.stream, delivered, [e.committed_at for e in entries], time.time())

    async def _deliver(self, run: list[DecodedEntry]) -> int:
        """Offer `run` to the connections registered now; returns how many frames were queued for
        clients in all."""
        delivered = 0
        if not run:
            return delivered
        offers = [
            (batch, list(group.queues)) for group in self.groups.values() if (batch := group.batch(run))
        ]
        self.dispatching = True
        try:
            budget = SLICE
            for batch, queues in offers:
                for queue in queues:
                    delivered += queue.offer(batch)
                    budget -= 1
                    if not budget:
                        budget = SLICE
                        await asyncio.sleep(0)
        finally:
            self.dispatching = False
        return delivered

    def _reset_all(self, discontinuity: Discontinuity) -> None:
        """The stream cannot continue where its subscribers are: tell live ones, end replaying ones."""
        reason, resume = discontinuity.reason, discontinuity.resume
        log.warning("stream %s: %s; resetting %d subscriber groups", self.stream, reason, len(self.groups))
        self.epoch, self.cursor = resume.epoch, resume.offset
        position = str(resume)
        data = {"reason": reason, "position": position}
        for group in self.groups.values():
            frame = group.fmt.control("reset", position, data)
            for queue in group.queues:
                if queue.push_reset(frame, resume.epoch, resume.offset):
                    queue.outlet.flush()
                elif queue.state is State.REPLAYING:
                    queue.close(reason)  # it resumes from history; a stalled one's catch-up says reset
            self._metrics.reset(self.stream, reason, len(group.queues))
