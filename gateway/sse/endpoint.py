"""The change-stream response: a raw ASGI responder, one loop per connection.

A raw responder, not sse-starlette: the measured server CPU per delivery is about half (loadtests/RESULTS.md),
because it adds no task per connection (sse-starlette runs four), needs no task switch per event (the
stream reader starts the `send`), and writes whatever is pending in one `send`. It does what
sse-starlette would otherwise do for us: headers and `:ok` go out at once, a disconnect is noticed at once
(uvicorn's `send` returns silently after one, only `receive` tells), heartbeats are sent, and streams end
on shutdown.

The loop (Mercure's `subscribe.go`, in asyncio): replay from the broker if resuming, hand over to live
delivery (`Connection.live`: the stream reader writes each batch), and when the connection stalls, catch up
from the broker after what it delivered and go live again (docs/delivery.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from gateway.broker.base import Broker
from gateway.broker.continuity import Discontinuity, Position, check_entry, check_head, check_resume
from gateway.fanout.group import DecodedEntry
from gateway.fanout.hub import Hub, Subscription
from gateway.fanout.queue import DeliveryQueue, State
from gateway.ops.metrics import Metrics
from gateway.ops.requestlog import CLIENT_LEFT, SERVER_SEND, SubscriberCutOff
from gateway.sse.connection import Connection
from gateway.sse.frames import Format, bookmark_frame, control_frame, preamble

REPLAY_PAGE = 500
HEADERS = {
    Format.SSE: [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"connection", b"keep-alive"),
    ],
    Format.NDJSON: [
        (b"content-type", b"application/x-ndjson"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ],
}


@dataclass(frozen=True, slots=True)
class StreamServices:
    """What every change-stream response of a worker uses; shared, so each stream holds one reference."""

    hub: Hub
    broker: Broker
    metrics: Metrics
    retry_ms: int


class ChangeStreamResponse:
    """Streams one subscription until the client leaves, falls behind, or the worker shuts down (an ASGI
    app; slots, since it lives as long as the stream)."""

    __slots__ = ("_fmt", "_prelude", "_resume", "_services", "_stream", "_subscription")

    def __init__(
        self,
        subscription: Subscription,
        services: StreamServices,
        *,
        fmt: Format,
        resume: str | None,
        prelude: bytes = b"",
    ) -> None:
        self._subscription = subscription
        self._services = services
        self._fmt = fmt
        self._resume = resume
        self._prelude = prelude  # a snapshot's frames (gateway.sse.snapshot), sent before the replay
        self._stream = subscription.reader.stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = Connection(
            self._subscription, send, scope.get(SERVER_SEND, send), self._services.metrics
        )
        queue = connection.queue
        try:
            await connection.open(HEADERS[self._fmt], self._opening())
            if self._resume is not None:
                reader = self._subscription.reader
                start = check_resume(self._resume, reader.epoch, reader.cursor)
                await connection.watching(receive, lambda: self._replay(connection, start))
            while True:
                await connection.live(receive)
                if queue.state is not State.STALLED:
                    break
                await self._catch_up(connection, receive)
            await connection.finish(self._stream)
        except SubscriberCutOff:
            if queue.close_reason == "write-timeout":
                self._services.metrics.cut_off(self._stream, "write-timeout")
            raise
        finally:
            scope[CLIENT_LEFT] = queue.close_reason == "disconnect"
            await self._services.hub.unsubscribe(self._subscription)

    def _opening(self) -> bytes:
        """The stream's first write; a snapshot's frames are let go here, not held as long as the stream."""
        opening = preamble(self._fmt, self._services.retry_ms) + self._prelude
        self._prelude = b""
        if self._resume is None:
            opening += bookmark_frame(self._fmt, self._subscription.start_position.encode())
        return opening

    async def abandon(self) -> None:
        """Undo the registration of a stream that will not be run (a multiplexed stream refused later)."""
        await self._services.hub.unsubscribe(self._subscription)

    async def _catch_up(self, connection: Connection, receive: Receive) -> None:
        """A stalled connection reads the history it missed at its own pace (the resume path), then
        rejoins live delivery; `reset` if that history is gone."""
        queue = connection.queue
        epoch, offset = queue.catch_up()
        reset = await connection.watching(receive, lambda: self._replay(connection, Position(epoch, offset)))
        if reset is not None:
            self._services.metrics.cut_off(self._stream, reset)
        elif queue.state is State.LIVE:
            self._services.metrics.caught_up(self._stream)

    async def _replay(self, connection: Connection, start: Position | Discontinuity) -> str | None:
        """Send what the client missed after `start`, then hand over to live delivery without gap or
        duplicate. Where that history is not there, say `reset` and continue where the continuity rule
        says (`gateway.broker.continuity`); returns the reason of the first reset told, if any."""
        queue = connection.queue
        group = self._subscription.group
        told: str | None = None
        if isinstance(start, Discontinuity):
            told = await self._tell_reset(connection, start)
            start = start.resume
        epoch, cursor = start.epoch, start.offset
        queue.sent(cursor)
        checked = False  # whether the head was asked, when a read finds nothing
        replayed = 0
        while queue.state is State.REPLAYING:
            entries = await self._services.broker.read(self._stream, cursor, REPLAY_PAGE)
            discontinuity = None
            if not entries and not checked:
                discontinuity = check_head(epoch, cursor, await self._services.broker.head(self._stream))
            checked = True
            frames = []
            last = None
            for entry in entries:
                discontinuity = check_entry(epoch, cursor, entry)
                if discontinuity is not None:
                    break
                frame = group.frame(DecodedEntry(entry))
                if frame is not None:
                    frames.append(frame)
                    last = entry.offset
                cursor = entry.offset
            if last is not None:
                await connection.write(b"".join(frames))
                queue.sent(last)
                replayed += len(frames)
            if discontinuity is not None:
                told = told or discontinuity.reason
                await self._tell_reset(connection, discontinuity)
                epoch, cursor = discontinuity.resume.epoch, discontinuity.resume.offset
                checked = False
                continue
            if len(entries) < REPLAY_PAGE and self._go_live(queue, cursor):
                break
        self._services.metrics.replayed(self._stream, replayed)
        return told

    def _go_live(self, queue: DeliveryQueue, last_offset: str) -> bool:
        """`DeliveryQueue.go_live`, counting the live frames it queued (held back during the replay)."""
        queued = queue.go_live(last_offset)
        if queued:
            self._services.metrics.delivered(self._stream, queued)
        return queued is not None

    async def _tell_reset(self, connection: Connection, discontinuity: Discontinuity) -> str:
        """Tell the client its position cannot be continued, and where the stream continues instead."""
        reason, resume = discontinuity.reason, discontinuity.resume
        position = str(resume)
        self._services.metrics.reset(self._stream, reason)
        await connection.write(
            control_frame(self._fmt, "reset", position, {"reason": reason, "position": position})
        )
        connection.queue.sent(resume.offset, resume.epoch)
        return reason


class CutOffLogFilter(logging.Filter):
    """Keep the server's error log for real faults: a slow subscriber cut off on purpose is logged by us."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SubscriberCutOff)
