"""The per-worker hub: owns the stream readers, registers connections' queues, ticks the shared clock.

Registration is synchronous with respect to the readers (one event loop), so the offset a queue registers
at is exactly where its live delivery starts; a resuming connection replays up to there from the broker and
`DeliveryQueue.go_live` drops the overlap. One ticker task moves the worker's coarse clock and visits every
connection (`Outlet.tick`), which decides its own heartbeat, bookmark and expiry: no timer per connection.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.broker.base import Broker
from gateway.broker.continuity import format_position
from gateway.fanout.clock import CoarseClock
from gateway.fanout.group import Group, GroupKey
from gateway.fanout.queue import DeliveryQueue
from gateway.fanout.reader import StreamReader
from gateway.fanout.view import Predicate
from gateway.models.definition import ModelDef
from gateway.ops.metrics import Metrics
from gateway.tasks import cancel_and_wait


@dataclass(frozen=True, slots=True)
class HubSettings:
    max_events: int = 1000
    max_bytes: int = 1_048_576
    heartbeat: float = 15.0
    bookmark_interval: float = 5.0
    write_timeout: float = 30.0  # a socket that accepts nothing this long is cut off

    @property
    def tick(self) -> float:
        """How often the clock moves: fine enough for the shortest interval it serves."""
        return min(1.0, self.heartbeat / 2, self.bookmark_interval / 2)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A registered queue, where it was registered, and what its connection needs of the hub."""

    queue: DeliveryQueue
    reader: StreamReader
    group: Group
    start_offset: str  # live delivery starts after this offset
    epoch: str
    clock: CoarseClock
    settings: HubSettings
    expires_at: float | None  # loop time at which the credentials expire

    @property
    def start_position(self) -> str:
        return format_position(self.epoch, self.start_offset)


class Hub:
    def __init__(self, broker: Broker, settings: HubSettings, metrics: Metrics) -> None:
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self._readers: dict[str, StreamReader] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.clock = CoarseClock(0.0)
        self.count = 0

    def start(self) -> None:
        self.clock.now = asyncio.get_running_loop().time()
        self._ticker = asyncio.create_task(self._tick(), name="hub-ticker")

    async def aclose(self) -> None:
        if self._ticker is not None:
            await cancel_and_wait([self._ticker])
        for reader in list(self._readers.values()):
            for group in reader.groups.values():
                for queue in group.queues:
                    queue.close("shutdown")
            await reader.aclose()
        self._readers.clear()

    @property
    def settings(self) -> HubSettings:
        return self._settings

    @property
    def readers(self) -> dict[str, StreamReader]:
        return self._readers

    async def subscribe(
        self,
        model: ModelDef,
        key: GroupKey,
        predicate_factory: Callable[[], Predicate | None],
        fields: tuple[str, ...] | None,
        *,
        replaying: bool,
        expires_at: float | None = None,
    ) -> Subscription:
        """Register a connection's queue; raises BrokerError if the stream cannot be read.

        With `expires_at` (Unix time: the credentials' expiry), the connection ends the stream then, after
        an `event: error` frame with `{"reason": "token-expired"}`."""
        reader = await self._reader(model)
        group = reader.group(key, predicate_factory, fields)
        queue = DeliveryQueue(
            max_events=self._settings.max_events,
            max_bytes=self._settings.max_bytes,
            replaying=replaying,
            epoch=reader.epoch,
            offset=reader.cursor,
        )
        group.queues[queue] = None
        loop_now = asyncio.get_running_loop().time()
        self.clock.now = max(self.clock.now, loop_now)
        due = None if expires_at is None else loop_now + (expires_at - time.time())
        self.count += 1
        self._metrics.stream_opened(model.stream)
        return Subscription(
            queue, reader, group, reader.cursor, reader.epoch, self.clock, self._settings, due
        )

    async def unsubscribe(self, subscription: Subscription) -> None:
        queue, reader = subscription.queue, subscription.reader
        queue.close("gone")
        reader.remove(subscription.group, queue)
        self.count -= 1
        self._metrics.stream_closed(reader.stream)
        if reader.empty and self._readers.get(reader.stream) is reader:
            del self._readers[reader.stream]
            await reader.aclose()

    async def _reader(self, model: ModelDef) -> StreamReader:
        while True:
            reader = self._readers.get(model.stream)
            if reader is None or reader.failed:
                reader = StreamReader(model.stream, model.id_name, self._broker, self._metrics)
                self._readers[model.stream] = reader
                try:
                    await reader.start()
                except BaseException:
                    if self._readers.get(model.stream) is reader:
                        del self._readers[model.stream]
                    raise
                return reader
            try:
                await asyncio.shield(reader.started)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if reader.started.cancelled() and not (current and current.cancelling()):
                    continue  # its starter was cancelled, not us: start one
                raise
            return reader

    def queues(self) -> list[DeliveryQueue]:
        return [q for r in self._readers.values() for g in r.groups.values() for q in g.queues]

    def close_all(self, reason: str, window: float) -> None:
        """End every stream, spread evenly over `window` seconds, so clients do not reconnect at once."""
        loop = asyncio.get_running_loop()
        for queue in self.queues():
            loop.call_later(random.uniform(0, window), queue.close, reason)

    async def _tick(self) -> None:
        interval = self._settings.tick
        loop = asyncio.get_running_loop()
        clock = self.clock
        while True:
            await asyncio.sleep(interval)
            now = clock.now = loop.time()
            for reader in list(self._readers.values()):
                for group in list(reader.groups.values()):
                    for queue in list(group.queues):
                        queue.outlet.tick(now)
