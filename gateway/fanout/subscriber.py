"""One subscriber's bounded buffer, and the replay→live handoff (Mercure `localsubscriber.go`, in asyncio).

The stream reader pushes shared, pre-encoded frames, then flushes: each connection gets everything pending in
one piece, in one `send`, so a burst costs one write per connection, not one per event. Once a connection is
live its `send` is started right there, in the reader's task (`flush`): uvicorn's `send` finishes without
suspending unless the socket is over its write limit, so the usual write costs no task switch at all (about
a third of the CPU per delivery; loadtests/RESULTS.md). Only a write that does suspend (a client not
reading) is handed to the connection's own task to finish, so a slow client never stalls the reader.
Before a connection is live (headers, replay) the connection task writes, woken by `wait`, as before.

While a resuming subscriber replays history, live frames wait in `pending` with their offsets; `go_live`
then keeps only those after the last replayed offset. The worker's reader may still be behind what the
replay read from the broker, so after the handoff live frames up to that offset are skipped too (centrifuge's
recovery merge: drop what was already sent). Both buffers are bounded in events and bytes:
- live: the bound counts what waits for the socket. A frame that would pass it first writes what waits, so
  a batch larger than the bound goes out in pieces; only when a write is still under way (the client is
  not keeping up) does the subscriber stall: it drops its buffer, leaves live fan-out, and its connection
  catches up from the broker after `delivered` (the resume path), then rejoins live (`go_live`);
- pending: over its bound it is dropped and flagged, and the replay simply reads further from the broker.
Neither can stall the reader or grow memory without limit.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.broker.continuity import offset_key

SendBody = Callable[[bytes], Awaitable[None]]
"""Starts the ASGI send of one body chunk (the connection's `send`, with the message filled in)."""


class State(enum.Enum):
    REPLAYING = "replaying"  # reading history (resume or catch-up); live frames wait in `pending`
    LIVE = "live"
    STALLED = "stalled"  # fell behind: out of live fan-out until the connection starts catching up
    CLOSED = "closed"


class Subscriber:
    """A connection's place in the hub. Only the connection task awaits it; the hub only pushes."""

    __slots__ = (
        "_interrupted",
        "_parked",
        "blocked",
        "buffer",
        "buffered_bytes",
        "close_reason",
        "delivered_epoch",
        "delivered_offset",
        "epoch",
        "error",
        "last_offset",
        "last_write",
        "max_bytes",
        "max_events",
        "on_stall",
        "pending",
        "pending_bytes",
        "pending_overflowed",
        "send_body",
        "sending",
        "skip_until",
        "state",
    )

    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int,
        replaying: bool,
        on_stall: Callable[[], object] | None = None,
    ) -> None:
        self.max_events = max_events
        self.on_stall = on_stall  # counts the stall (a metric), when it happens
        self.max_bytes = max_bytes
        self.state = State.REPLAYING if replaying else State.LIVE
        self.buffer: list[bytes] = []
        self.buffered_bytes = 0
        self.pending: list[tuple[str, bytes]] = []
        self.pending_bytes = 0
        self.pending_overflowed = False
        self.last_offset = ""  # of the newest frame queued for the client (live), or sent (replay)
        self.epoch = ""  # the stream's epoch as this subscriber's frames carry it
        self.delivered_epoch = ""  # the position of the newest frame handed to a write: where a stalled
        self.delivered_offset = ""  # subscriber catches up from
        self.last_write = 0.0
        self.close_reason: str | None = None
        self.sending = False  # a write to the connection is under way (awaited, or blocked)
        self.send_body: SendBody | None = None  # set once live: `flush` then writes from the caller's task
        self.blocked: tuple[Generator[Any, None, None], object] | None = None  # a suspended send
        self.error: Exception | None = None  # what a failed direct send raised (close reason "error")
        self.skip_until: tuple[int, int] | None = None  # live frames up to here were sent by the replay
        self._parked: asyncio.Task[Any] | None = None  # the connection task, while idle in `idle()`
        self._interrupted = False

    # -- the hub's side --

    def push(self, frame: bytes, offset: str) -> bool:
        """A data frame for the entry at `offset` (or a bookmark of it). True when it was queued for the
        client; a frame a replaying subscriber holds back counts only when `go_live` queues it."""
        state = self.state
        if state is State.LIVE:
            if self.skip_until is not None:
                if offset_key(offset) <= self.skip_until:
                    return False
                self.skip_until = None
            self._append(frame, offset)
            return self.state is State.LIVE  # not stalled by this very frame
        if state is State.REPLAYING and not self.pending_overflowed:
            self.pending.append((offset, frame))
            self.pending_bytes += len(frame)
            if len(self.pending) > self.max_events or self.pending_bytes > self.max_bytes:
                self.pending.clear()
                self.pending_bytes = 0
                self.pending_overflowed = True
        return False

    def push_control(self, frame: bytes, offset: str | None = None) -> None:
        """A heartbeat, bookmark or reset (live subscribers only); written at once."""
        if self.state is State.LIVE:
            self._append(frame, offset)
            self.flush(asyncio.get_running_loop().time())

    def push_reset(self, frame: bytes, epoch: str, offset: str) -> None:
        """A reset: the stream continues after `offset` of `epoch` (earlier offsets may follow it)."""
        self.epoch = epoch
        self.skip_until = None
        self.push_control(frame, offset)

    def _append(self, frame: bytes, offset: str | None) -> None:
        buffer = self.buffer
        if buffer and (len(buffer) >= self.max_events or self.buffered_bytes + len(frame) > self.max_bytes):
            self.flush(asyncio.get_running_loop().time())  # what waits goes first, if the socket takes it
            if self.buffer or self.state is not State.LIVE:
                if self.state is State.LIVE:
                    self._stall()
                return
            buffer = self.buffer
        if offset is not None:
            self.last_offset = offset
        buffer.append(frame)
        self.buffered_bytes += len(frame)
        if self.send_body is None:  # otherwise whoever pushed calls `flush`
            self._wake()

    def _stall(self) -> None:
        """Over the bound while a write is under way: leave live fan-out; the connection catches up."""
        self.state = State.STALLED
        self.buffer = []
        self.buffered_bytes = 0
        self.last_offset = self.delivered_offset
        self.skip_until = None
        if self.on_stall is not None:
            self.on_stall()
        self._wake()

    def flush(self, now: float) -> None:
        """Write everything buffered now, from the caller's task, when the connection takes it at once.

        `now` (the loop's clock) becomes `last_write`. A send that suspends (the client's socket is full)
        is parked in `blocked` for the connection task to finish; later frames wait in the buffer.
        """
        if self.send_body is None or self.sending or not self.buffer or self.state is not State.LIVE:
            return
        send = self.send_body(self.take()).__await__()
        try:
            blocker = send.send(None)
        except StopIteration:
            self.last_write = now
            return
        except Exception as exc:  # the server refused the write: end this stream, never the caller's
            self.error = exc
            self.close("error")
            return
        self.sending = True
        self.blocked = (send, blocker)
        self._wake()

    def _wake(self) -> None:
        task = self._parked
        if task is not None and not self._interrupted:
            self._interrupted = True
            task.cancel()  # taken back in `idle()`: only the await there is interrupted

    def close(self, reason: str) -> None:
        """End the subscription; the connection task notices at once."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.close_reason = reason
        self.buffer.clear()
        self.buffered_bytes = 0
        self.pending.clear()
        self._wake()

    # -- the connection's side --

    def catch_up(self) -> tuple[str, str]:
        """Start catching up after a stall: from now on live frames wait in `pending` again, as during a
        resume. Returns the position (epoch, offset) to replay after: the newest frame handed to a write."""
        assert self.state is State.STALLED
        self.state = State.REPLAYING
        self.pending_overflowed = False
        return self.delivered_epoch, self.delivered_offset

    def sent(self, offset: str) -> None:
        """The connection wrote, itself, frames up to the entry at `offset` (replay, reset)."""
        self.last_offset = self.delivered_offset = offset
        self.delivered_epoch = self.epoch

    def go_live(self, last_offset: str) -> int | None:
        """Hand over from replay to live delivery after `last_offset` was sent.

        Keeps the pending live frames after `last_offset` (dropping what replay already sent) and turns
        live; returns how many it queued for the client. Returns None, staying in replay, if live frames were
        dropped meanwhile (the caller reads further from the broker and tries again), or if the subscription
        ended or stalled.
        """
        if self.state is not State.REPLAYING:
            return 0 if self.state is State.LIVE else None
        if self.pending_overflowed:
            self.pending_overflowed = False
            return None
        self.skip_until = offset_key(last_offset)
        self.state = State.LIVE
        pending, self.pending = self.pending, []
        self.pending_bytes = 0
        queued = sum(self.push(frame, offset) for offset, frame in pending)
        return queued if self.state is State.LIVE else None

    def needs_task(self) -> bool:
        """Whether the connection task has work: a blocked send to finish, frames a blocked send held
        back, a catch-up to start, or the end of the subscription."""
        return (
            bool(self.buffer)
            or self.blocked is not None
            or self.state is State.CLOSED
            or self.state is State.STALLED
        )

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Around the connection task's idle `await receive()` (which only ever brings the disconnect).

        When the connection task is needed (`needs_task`), the hub cancels that await, and the cancellation
        is taken back here; so a quiet stream has no task, future or timer of its own, only the server's
        request task (idle memory per stream, loadtests/RESULTS.md). A cancellation from anyone else goes
        on. A message the interrupted `receive` had already got is lost; uvicorn repeats a disconnect.
        """
        task = asyncio.current_task()
        assert task is not None
        self._parked = task
        try:
            yield
        except asyncio.CancelledError:
            if not self._interrupted or task.uncancel() > 0:
                raise
        finally:
            self._parked = None
            self._interrupted = False

    async def finish_blocked(self) -> None:
        """Drive a send that `flush` started and that suspended, to its end, in the connection's task."""
        assert self.blocked is not None
        send, blocker = self.blocked
        self.blocked = None
        try:
            while True:
                await _resume_after(blocker)
                try:
                    blocker = send.send(None)
                except StopIteration:
                    return
        finally:
            send.close()  # no-op when it finished; unwinds it when this task was cancelled
            self.sending = False
            self.last_write = asyncio.get_running_loop().time()

    def take(self) -> bytes:
        """Everything buffered, as one write."""
        buffer = self.buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        self.buffer = []
        self.buffered_bytes = 0
        self.delivered_offset = self.last_offset
        self.delivered_epoch = self.epoch
        return data


async def _resume_after(blocker: object) -> None:
    """Wait for what a suspended coroutine yielded (an asyncio future, or None for a bare yield); its
    outcome, a result or an exception, is the coroutine's to see when it is resumed."""
    if blocker is None:
        await asyncio.sleep(0)
    elif asyncio.isfuture(blocker):
        await asyncio.wait([blocker])
    else:
        raise RuntimeError(f"an ASGI send yielded {blocker!r}, which is not an asyncio future")
