"""The connection: the one thing that writes to a client's socket (docs/delivery.md has its state machine).

It drains its `DeliveryQueue` (`gateway.fanout.queue`), whose `Outlet` it is, in one of three ways:
- AWAITED: its own task writes and waits (the opening, replay pages, resets, catch-up), each write cut off
  when the socket takes nothing for the write timeout;
- DIRECT (live): the task idles in `receive()`, and the stream reader's `flush` writes right there, in the
  reader's task: straight to uvicorn's transport when its `send` would not wait (`gateway.sse.transport`),
  else by starting the `send`, which completes without suspending unless the socket is over its write
  limit. So the usual delivery costs no task switch, and a burst is one write per connection;
- BLOCKED: a direct `send` that did suspend (the client is not reading) is parked here and the idle task is
  woken (its `receive` cancelled, the cancellation taken back) to finish it; frames meanwhile wait in the
  queue, and past its bound the queue stalls (the connection then catches up from history).
A quiet stream so has no task, future or timer of its own, only the server's request task. Heartbeats,
bookmarks and credential expiry are decided here too, when the hub's tick visits it, from the hub's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from starlette.types import Message, Receive, Send

from gateway.broker.continuity import offset_key
from gateway.fanout.batch import Batch
from gateway.fanout.hub import Subscription
from gateway.fanout.queue import State
from gateway.ops.metrics import Metrics
from gateway.ops.requestlog import SubscriberCutOff
from gateway.sse.transport import chunk, direct_cycle, write_chunk, write_wire

log = logging.getLogger("gateway.stream")

FINAL_WRITE_TIMEOUT = 1.0
EXPIRED = {"reason": "token-expired"}
T = TypeVar("T")


class Connection:
    """One client's change stream on the wire: writes, wake-ups, and its own deadlines."""

    __slots__ = (
        "_blocked",
        "_clock",
        "_cycle",
        "_direct",
        "_expires_at",
        "_expiry_told",
        "_group",
        "_interrupted",
        "_metrics",
        "_parked",
        "_reader",
        "_send",
        "_settings",
        "_start",
        "error",
        "last_write",
        "queue",
    )

    def __init__(self, subscription: Subscription, start: Send, send: Send, metrics: Metrics) -> None:
        """`start` sends the response's start (through the middleware that logs it), `send` every body
        chunk (the server's own, `SERVER_SEND`, which skips pass-through wrappers)."""
        self.queue = subscription.queue
        self._reader = subscription.reader
        self._group = subscription.group
        self._clock = subscription.clock
        self._settings = subscription.settings
        self._expires_at = subscription.expires_at
        self._expiry_told = False
        self._metrics = metrics
        self._start = start
        self._send = send
        self._direct = False  # live: writes start from the caller's task (`flush`)
        self._cycle: Any = None  # uvicorn's request cycle, when live chunks go to its transport directly
        self._blocked: tuple[Generator[Any, None, None], object] | None = None  # a suspended direct send
        self._parked: asyncio.Task[Any] | None = None  # this connection's task, while idle in `receive`
        self._interrupted = False
        self.last_write = self._clock.now
        self.error: Exception | None = None  # what a failed direct send raised (close reason "error")
        self.queue.outlet = self

    # -- the outlet: called synchronously by the stream reader, the queue and the hub's tick --

    def flush(self) -> None:
        """Write everything queued, from the caller's task when live; else the connection task will."""
        queue = self.queue
        if queue.writing or not queue.buffer or queue.state is not State.LIVE:
            return
        if not self._direct:
            self.wake()
            return
        data = queue.take()
        try:
            if self._cycle is not None and write_chunk(self._cycle, data):
                self.last_write = self._clock.now
                return
            send = self._send({"type": "http.response.body", "body": data, "more_body": True}).__await__()
            blocker = send.send(None)
        except StopIteration:
            self.last_write = self._clock.now
            return
        except Exception as exc:  # the server refused the write: end this stream, never the caller's
            self.error = exc
            queue.close("error")
            return
        queue.writing = True
        self._blocked = (send, blocker)
        self.wake()

    def write_now(self, batch: Batch) -> bool:
        """A whole batch for an idle live connection, as one chunk straight to the transport when it
        would take it at once; the chunk is built by the first connection of the group and shared."""
        cycle = self._cycle
        if cycle is None or not self._direct:
            return False
        wire = batch.wire
        if wire is None:
            wire = batch.wire = chunk(batch.body)
        if not write_wire(cycle, wire):
            return False
        self.last_write = self._clock.now
        return True

    def wake(self) -> None:
        """Interrupt the task's idle `receive` (see `live`); a task that is busy notices by itself."""
        task = self._parked
        if task is not None and not self._interrupted:
            self._interrupted = True
            task.cancel()

    def stalled(self) -> None:
        """Counted when it happens (the catch-up starts only once the blocked write is done)."""
        self._metrics.stalled(self._reader.stream)
        self.wake()

    def tick(self, now: float) -> None:
        """The hub's clock moved: end the stream if its credentials expired, else send a bookmark (a
        filtered stream whose last event is behind the stream) or a heartbeat when the socket was idle."""
        if self._expires_at is not None and now >= self._expires_at:
            self._expire(now)
            return
        queue = self.queue
        if not self._direct or queue.state is not State.LIVE or queue.buffer or queue.writing:
            return
        idle = now - self.last_write
        settings, group, reader = self._settings, self._group, self._reader
        cursor = reader.cursor
        if (
            group.filtered
            and not reader.dispatching
            and idle >= settings.bookmark_interval
            and queue.last_offset != cursor
            and queue.passed(offset_key(cursor))  # else the cursor is behind what the replay sent
        ):
            queue.push_control(group.bookmark(reader.position(cursor).encode()), cursor)
        elif idle >= settings.heartbeat:
            queue.push_control(group.fmt.ping)
        else:
            return
        self.flush()

    def _expire(self, now: float) -> None:
        """First the error frame (written at once, or by the task before the next tick), then the close."""
        queue = self.queue
        if not self._expiry_told and queue.push_control(self._group.fmt.control("error", None, EXPIRED)):
            self._expiry_told = True
            self._expires_at = now  # closed at the next tick
            self.flush()
        else:
            queue.close("expired")

    # -- the connection's own task --

    async def open(self, headers: list[tuple[bytes, bytes]], opening: bytes) -> None:
        await self._start({"type": "http.response.start", "status": 200, "headers": headers})
        await self.write(opening)

    async def write(self, data: bytes) -> None:
        """A write by this task, cut off when the socket takes nothing for the write timeout."""
        queue = self.queue
        queue.writing = True
        try:
            async with asyncio.timeout(self._settings.write_timeout):
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
        except TimeoutError:
            queue.close("write-timeout")
            raise SubscriberCutOff from None
        finally:
            queue.writing = False
        self.last_write = self._clock.now

    async def live(self, receive: Receive) -> None:
        """Live delivery, written by the stream reader, until the queue stalls (the caller catches up
        and comes back) or closes. This task idles in `receive` (to notice the client leaving) and is
        woken only to finish a write that had to wait, or to write what was queued before going direct.

        `wake` cancels the idle `receive`, and the cancellation is taken back here; a cancellation from
        anyone else goes on. A message the interrupted `receive` had already got is lost; uvicorn repeats a
        disconnect. (Inline, not a context manager or a helper coroutine around the await: an idle stream
        holds that frame for hours, and either costs 0.2-0.3 KB per stream.)"""
        queue = self.queue
        task = asyncio.current_task()
        assert task is not None
        self._direct = True
        self._cycle = direct_cycle(self._send)
        try:
            while True:
                state = queue.state
                if state is State.CLOSED:
                    return
                if self._blocked is not None:
                    await self._finish_blocked()
                elif state is State.STALLED:
                    return
                elif queue.buffer:
                    await self.write(queue.take())
                else:  # idle in `receive`, which only ever brings the disconnect (see `wake`)
                    self._parked = task
                    try:
                        message = await receive()
                    except asyncio.CancelledError:
                        if not self._interrupted or task.uncancel() > 0:
                            raise
                        continue
                    finally:
                        self._parked = None
                        self._interrupted = False
                    if message["type"] == "http.disconnect":
                        queue.close("disconnect")
        finally:
            self._direct = False
            if self._blocked is not None:  # closed while a write waited: nobody will read it
                self._blocked[0].close()
                self._blocked = None
                queue.writing = False

    async def watching(self, receive: Receive, work: Callable[[], Awaitable[T]]) -> T:
        """`work()` (a replay: this task is busy reading the broker) with a task noticing the client
        leaving meanwhile."""
        queue = self.queue
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))

        def disconnected(done: asyncio.Future[None]) -> None:
            if not done.cancelled():  # cancelled below when the work is over: the client is still there
                queue.close("disconnect")

        watcher.add_done_callback(disconnected)
        try:
            return await work()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def finish(self, stream: str) -> None:
        """End the response as the close reason says: nothing after a disconnect, the server's error
        again, a cut-off (the client resumes by `Last-Event-ID`), or the body's last chunk."""
        reason = self.queue.close_reason
        if reason == "disconnect":
            return
        if reason == "error" and self.error is not None:
            raise self.error
        if reason == "write-timeout":
            log.info(
                "stream %s: cut off, its socket accepted nothing for %s s",
                stream,
                self._settings.write_timeout,
            )
            raise SubscriberCutOff
        try:
            async with asyncio.timeout(FINAL_WRITE_TIMEOUT):
                await self._send({"type": "http.response.body", "body": b""})
        except TimeoutError:
            raise SubscriberCutOff from None

    async def _finish_blocked(self) -> None:
        """Drive a direct send that suspended to its end, in this task, within the write timeout."""
        assert self._blocked is not None
        send, blocker = self._blocked
        self._blocked = None
        try:
            async with asyncio.timeout(self._settings.write_timeout):
                while True:
                    await _resume_after(blocker)
                    try:
                        blocker = send.send(None)
                    except StopIteration:
                        break
        except TimeoutError:
            self.queue.close("write-timeout")
            raise SubscriberCutOff from None
        finally:
            send.close()  # no-op when it finished; unwinds it when cut off or cancelled
            self.queue.writing = False
        self.last_write = self._clock.now


async def _resume_after(blocker: object) -> None:
    """Wait for what a suspended coroutine yielded (an asyncio future, or None for a bare yield); its
    outcome, a result or an exception, is the coroutine's to see when it is resumed."""
    if blocker is None:
        await asyncio.sleep(0)
    elif asyncio.isfuture(blocker):
        await asyncio.wait([blocker])
    else:
        raise RuntimeError(f"an ASGI send yielded {blocker!r}, which is not an asyncio future")


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
