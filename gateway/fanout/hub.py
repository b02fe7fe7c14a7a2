"""The per-worker hub: owns the stream readers, registers subscribers, keeps idle streams alive.

Registration is synchronous with respect to the readers (one event loop), so the offset a subscriber
registers at is exactly where its live delivery starts; a resuming subscriber replays up to there from the
broker and `Subscriber.go_live` drops the overlap. One ticker task serves every connection's heartbeat and
bookmark, instead of a timer per connection.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.broker.base import Broker
from gateway.broker.continuity import format_position, offset_key
from gateway.fanout.group import Group, GroupKey
from gateway.fanout.reader import StreamReader
from gateway.fanout.subscriber import State, Subscriber
from gateway.fanout.view import Predicate
from gateway.models.definition import ModelDef
from gateway.ops.metrics import Metrics

EXPIRED = {"reason": "token-expired"}


@dataclass(frozen=True, slots=True)
class HubSettings:
    max_events: int = 1000
    max_bytes: int = 1_048_576
    heartbeat: float = 15.0
    bookmark_interval: float = 5.0
    write_timeout: float = 30.0  # a socket that accepts nothing this long is cut off


@dataclass(frozen=True, slots=True)
class Subscription:
    """A registered subscriber and where it was registered."""

    subscriber: Subscriber
    reader: StreamReader
    group: Group
    start_offset: str  # live delivery starts after this offset
    epoch: str

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
        self.count = 0
        # Streams whose credentials expire: (loop time, tie-breaker, subscriber, frame to send first or None
        # to close). A heap, so the ticker's cost is nil until one is due; entries of streams that ended
        # earlier are skipped when they come up.
        self._expiries: list[tuple[float, int, Subscriber, bytes | None]] = []
        self._sequence = itertools.count()

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="hub-ticker")

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for reader in list(self._readers.values()):
            for group in reader.groups.values():
                for subscriber in group.subscribers:
                    subscriber.close("shutdown")
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
        """Register the current task's connection; raises BrokerError if the stream cannot be read.

        With `expires_at` (Unix time: the credentials' expiry), the stream is ended then, after an
        `event: error` frame with `{"reason": "token-expired"}`."""
        reader = await self._reader(model)
        group = reader.group(key, predicate_factory, fields)
        subscriber = Subscriber(
            max_events=self._settings.max_events,
            max_bytes=self._settings.max_bytes,
            replaying=replaying,
            on_stall=reader.count_stall,
        )
        subscriber.sent(reader.cursor)
        subscriber.epoch = subscriber.delivered_epoch = reader.epoch
        subscriber.last_write = asyncio.get_running_loop().time()
        group.subscribers[subscriber] = None
        if expires_at is not None:
            due = asyncio.get_running_loop().time() + (expires_at - time.time())
            frame = key[0].control("error", None, EXPIRED)
            heapq.heappush(self._expiries, (due, next(self._sequence), subscriber, frame))
        self.count += 1
        self._metrics.connections.labels(model.stream).inc()
        self._metrics.connections_opened.labels(model.stream).inc()
        return Subscription(subscriber, reader, group, reader.cursor, reader.epoch)

    async def unsubscribe(self, subscription: Subscription) -> None:
        subscriber, reader = subscription.subscriber, subscription.reader
        if subscriber.close_reason == "write-timeout":
            self._metrics.slow_cutoffs.labels(reader.stream, "write-timeout").inc()
        subscriber.close("gone")
        reader.remove(subscription.group, subscriber)
        self.count -= 1
        self._metrics.connections.labels(reader.stream).dec()
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

    def subscribers(self) -> list[Subscriber]:
        return [s for r in self._readers.values() for g in r.groups.values() for s in g.subscribers]

    def close_all(self, reason: str, window: float) -> None:
        """End every stream, spread evenly over `window` seconds, so clients do not reconnect at once."""
        loop = asyncio.get_running_loop()
        for subscriber in self.subscribers():
            loop.call_later(random.uniform(0, window), subscriber.close, reason)

    def _expire(self, now: float) -> None:
        """End streams whose credentials expired: first the error frame (written at once, or by the
        connection before the next tick), then, one tick later, the close."""
        expiries = self._expiries
        told = []
        while expiries and expiries[0][0] <= now:
            _, _, subscriber, frame = heapq.heappop(expiries)
            if subscriber.state is State.CLOSED:
                continue
            if frame is not None and subscriber.state is State.LIVE:
                subscriber.push_control(frame)
                told.append(subscriber)
            else:
                subscriber.close("expired")
        for subscriber in told:
            heapq.heappush(expiries, (now, next(self._sequence), subscriber, None))

    async def _tick(self) -> None:
        settings = self._settings
        interval = min(1.0, settings.heartbeat / 2, settings.bookmark_interval / 2)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            if self._expiries and self._expiries[0][0] <= now:
                self._expire(now)
            for reader in self._readers.values():
                cursor = reader.cursor
                cursor_key = offset_key(cursor)
                for group in reader.groups.values():
                    bookmark: bytes | None = None
                    for subscriber in group.subscribers:
                        if subscriber.state is not State.LIVE or subscriber.buffer:
                            continue
                        if subscriber.skip_until is not None and cursor_key > subscriber.skip_until:
                            subscriber.skip_until = None  # the reader has passed what the replay sent
                        idle = now - subscriber.last_write
                        if (
                            group.filtered
                            and subscriber.skip_until is None  # else the cursor is behind what was sent
                            and subscriber.last_offset != cursor
                            and idle >= settings.bookmark_interval
                        ):
                            if bookmark is None:
                                bookmark = group.fmt.bookmark(reader.position(cursor).encode())
                            subscriber.push_control(bookmark, cursor)
                        elif idle >= settings.heartbeat:
                            subscriber.push_control(group.fmt.ping)
