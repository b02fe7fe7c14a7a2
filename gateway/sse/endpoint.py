"""The change-stream response: a raw ASGI responder, one loop per connection.

A raw responder, not sse-starlette: the measured server CPU per delivery is about half (loadtests/RESULTS.md),
because it adds no task per connection (sse-starlette runs four), needs no task switch per event (the
stream reader starts the `send`), and writes whatever is pending in one `send`. It does what
sse-starlette would otherwise do for us: headers and `:ok` go out at once, a disconnect is noticed at once
(uvicorn's `send` returns silently after one, only `receive` tells), the hub's ticker sends heartbeats, and
the hub ends streams on shutdown.

The loop (Mercure's `subscribe.go`, in asyncio): replay from the broker if resuming, hand over to live
delivery, then hand the connection's `send` to the hub, which writes each batch straight from the stream
reader (`Subscriber.flush`); this task then idles in `receive` and only finishes writes that had to wait
for a slow client, and catches up from the broker when its subscriber stalled (docs/delivery.md). So a
live stream has no task of its own beyond the server's request task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.broker.base import Broker
from gateway.broker.continuity import Discontinuity, Position, check_entry, check_head, check_resume
from gateway.fanout.group import DecodedEntry
from gateway.fanout.hub import Hub, Subscription
from gateway.fanout.subscriber import State
from gateway.ops.metrics import Metrics
from gateway.ops.requestlog import CLIENT_LEFT, SERVER_SEND, SubscriberCutOff
from gateway.sse.frames import Format, bookmark_frame, control_frame, preamble

log = logging.getLogger("gateway.stream")

REPLAY_PAGE = 500
FINAL_WRITE_TIMEOUT = 1.0
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


class ChangeStreamResponse(Response):
    """Streams one subscription until the client leaves, falls behind, or the worker shuts down."""

    def __init__(
        self,
        subscription: Subscription,
        *,
        hub: Hub,
        broker: Broker,
        metrics: Metrics,
        fmt: Format,
        resume: str | None,
        retry_ms: int,
        prelude: bytes = b"",
    ) -> None:
        self.status_code = 200
        self._timeout = hub.settings.write_timeout
        self.background = None
        self._subscription = subscription
        self._hub = hub
        self._broker = broker
        self._metrics = metrics
        self._fmt = fmt
        self._resume = resume
        self._retry_ms = retry_ms
        self._prelude = prelude  # a snapshot's frames (gateway.sse.snapshot), sent before the replay
        self._stream = subscription.reader.stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS[self._fmt]})
            opening = preamble(self._fmt, self._retry_ms) + self._prelude
            if self._resume is None:
                start = self._subscription.start_position.encode()
                opening += bookmark_frame(self._fmt, start)
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            if self._resume is not None:
                reader = self._subscription.reader
                resume = check_resume(self._resume, reader.epoch, reader.cursor)
                await self._replay_watching(receive, send, resume)
            await self._live(receive, send, scope.get(SERVER_SEND, send))
        finally:
            scope[CLIENT_LEFT] = self._subscription.subscriber.close_reason == "disconnect"
            await self._hub.unsubscribe(self._subscription)

    async def abandon(self) -> None:
        """Undo the registration of a stream that will not be run (a multiplexed stream refused later)."""
        await self._hub.unsubscribe(self._subscription)

    async def _replay_watching(
        self, receive: Receive, send: Send, start: Position | Discontinuity
    ) -> str | None:
        """`_replay`, with a task watching for the client to leave meanwhile (this one is busy reading)."""
        subscriber = self._subscription.subscriber
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))

        def disconnected(done: asyncio.Future[None]) -> None:
            if not done.cancelled():  # cancelled below when the replay is over: the client is still there
                subscriber.close("disconnect")

        watcher.add_done_callback(disconnected)
        try:
            return await self._replay(send, start)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _live(self, receive: Receive, send: Send, body_send: Send) -> None:
        """From here the hub writes (`Subscriber.flush`). This task idles in `receive` (to notice the
        client leaving) and is woken only to finish writes that had to wait for the client, to write
        what was buffered before the hand-over, and to catch up from history after a stall."""
        subscriber = self._subscription.subscriber
        loop = asyncio.get_running_loop()

        def send_body(data: bytes) -> Awaitable[None]:
            return body_send({"type": "http.response.body", "body": data, "more_body": True})

        subscriber.send_body = send_body
        while True:
            if not subscriber.needs_task():
                message = None
                with subscriber.idle():
                    message = await receive()
                if message is not None and message["type"] == "http.disconnect":
                    subscriber.close("disconnect")
                continue
            if subscriber.state is State.CLOSED:
                break
            if subscriber.blocked is not None:
                await self._finish_blocked()
            elif subscriber.state is State.STALLED:
                await self._catch_up(receive, send)
            else:
                await self._write(send, subscriber.take())
                subscriber.last_write = loop.time()
        subscriber.send_body = None
        reason = subscriber.close_reason
        if reason == "disconnect":
            return
        if reason == "error" and subscriber.error is not None:
            raise subscriber.error
        if reason == "write-timeout":
            log.info("stream %s: cut off, its socket accepted nothing for %s s", self._stream, self._timeout)
            raise SubscriberCutOff
        try:
            async with asyncio.timeout(FINAL_WRITE_TIMEOUT):
                await send({"type": "http.response.body", "body": b""})
        except TimeoutError:
            raise SubscriberCutOff from None

    async def _catch_up(self, receive: Receive, send: Send) -> None:
        """A stalled subscriber reads the history it missed at its own pace (the resume path), then
        rejoins live delivery; `reset` if that history is gone."""
        subscriber = self._subscription.subscriber
        epoch, offset = subscriber.catch_up()
        reset = await self._replay_watching(receive, send, Position(epoch, offset))
        if reset is not None:
            self._metrics.slow_cutoffs.labels(self._stream, reset).inc()
        elif subscriber.state is State.LIVE:
            self._metrics.catch_ups.labels(self._stream).inc()

    async def _write(self, send: Send, data: bytes) -> None:
        """A write by this task, cut off when the socket takes nothing for the write timeout."""
        subscriber = self._subscription.subscriber
        subscriber.sending = True
        try:
            async with asyncio.timeout(self._timeout):
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except TimeoutError:
            subscriber.close("write-timeout")
            raise SubscriberCutOff from None
        finally:
            subscriber.sending = False

    async def _finish_blocked(self) -> None:
        subscriber = self._subscription.subscriber
        try:
            async with asyncio.timeout(self._timeout):
                await subscriber.finish_blocked()
        except TimeoutError:
            subscriber.close("write-timeout")
            raise SubscriberCutOff from None

    async def _replay(self, send: Send, start: Position | Discontinuity) -> str | None:
        """Send what the client missed after `start`, then hand over to live delivery without gap or
        duplicate. Where that history is not there, say `reset` and continue where the continuity rule
        says (`gateway.broker.continuity`); returns the reason of the first reset told, if any."""
        subscriber = self._subscription.subscriber
        group = self._subscription.group
        told: str | None = None
        if isinstance(start, Discontinuity):
            told = await self._tell_reset(send, start)
            start = start.resume
        epoch, cursor = start.epoch, start.offset
        subscriber.sent(cursor)
        checked = False  # whether the head was asked, when a read finds nothing
        replayed = 0
        while subscriber.state is State.REPLAYING:
            entries = await self._broker.read(self._stream, cursor, REPLAY_PAGE)
            discontinuity = None
            if not entries and not checked:
                discontinuity = check_head(epoch, cursor, await self._broker.head(self._stream))
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
                await self._write(send, b"".join(frames))
                subscriber.sent(last)
                replayed += len(frames)
            if discontinuity is not None:
                told = told or discontinuity.reason
                await self._tell_reset(send, discontinuity)
                epoch, cursor = discontinuity.resume.epoch, discontinuity.resume.offset
                checked = False
                continue
            if len(entries) < REPLAY_PAGE and self._go_live(cursor):
                break
        if replayed:
            self._metrics.replayed.labels(self._stream).inc(replayed)
        return told

    def _go_live(self, last_offset: str) -> bool:
        """`Subscriber.go_live`, counting the live frames it queued (held back during the replay)."""
        queued = self._subscription.subscriber.go_live(last_offset)
        if queued:
            self._metrics.delivered.labels(self._stream).inc(queued)
        return queued is not None

    async def _tell_reset(self, send: Send, discontinuity: Discontinuity) -> str:
        """Tell the client its position cannot be continued, and where the stream continues instead."""
        subscriber = self._subscription.subscriber
        reason, resume = discontinuity.reason, discontinuity.resume
        position = str(resume)
        self._metrics.resets.labels(self._stream, reason).inc()
        subscriber.epoch = resume.epoch
        await self._write(
            send, control_frame(self._fmt, "reset", position, {"reason": reason, "position": position})
        )
        subscriber.sent(resume.offset)
        return reason


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


class CutOffLogFilter(logging.Filter):
    """Keep the server's error log for real faults: a slow subscriber cut off on purpose is logged by us."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SubscriberCutOff)
