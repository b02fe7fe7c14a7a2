"""One connection's delivery queue: pure and synchronous (no I/O, no task, no clock), like Centrifuge's
`internal/queue`, plus the slow-consumer rules that decide what a frame does to it.

The stream reader pushes shared, pre-encoded frames; the connection that drains the queue (its `Outlet`,
`gateway.sse.connection`) takes everything pending as one write. Both bounds (`max_events`, `max_bytes`)
count what waits for the socket:
- LIVE: a frame that would pass the bound asks the outlet to write what waits first, so a broker batch
  larger than the bound goes out in pieces. Only when a write is still under way (`writing`: the client is
  not keeping up) does the queue stall: it drops its frames, leaves live fan-out (pushes are ignored) and
  remembers the position of the newest frame handed to a write, from which the connection catches up.
- REPLAYING (a resume, a snapshot or a catch-up): live frames wait in `pending` with their offsets; over the
  bound they are dropped and flagged, and the replay simply reads further from the broker. `go_live` keeps
  those after the last replayed offset (centrifuge's recovery merge); since the worker's reader may still be
  behind what the replay read, live frames up to that offset are skipped after the hand-over too.
Neither can stall the reader or grow memory without limit.
"""

from __future__ import annotations

import enum
from typing import Protocol

from gateway.broker.continuity import offset_key
from gateway.fanout.batch import Batch


class State(enum.Enum):
    REPLAYING = "replaying"  # reading history (resume or catch-up); live frames wait in `pending`
    LIVE = "live"
    STALLED = "stalled"  # fell behind: out of live fan-out until the connection starts catching up
    CLOSED = "closed"


class Outlet(Protocol):
    """What drains a queue: the one thing that writes to the client's socket."""

    def flush(self) -> None:
        """Write what the queue holds, now if the socket takes it at once."""
        ...

    def write_now(self, batch: Batch) -> bool:
        """Write the whole batch at once if the socket takes it without waiting; False: it was not
        written (the caller queues its frames instead)."""
        ...

    def wake(self) -> None:
        """The queue closed: the outlet's own task has work."""
        ...

    def stalled(self) -> None:
        """The queue stalled (left live fan-out): the outlet's own task catches up."""
        ...

    def tick(self, now: float) -> None:
        """The hub's coarse clock moved to `now`: heartbeats, bookmarks and expiry are due by it."""
        ...


class _Detached:
    """The outlet of a queue whose connection has not started (admission, snapshot): frames wait."""

    def flush(self) -> None:
        return None

    def write_now(self, batch: Batch) -> bool:
        return False

    def wake(self) -> None:
        return None

    def stalled(self) -> None:
        return None

    def tick(self, now: float) -> None:
        return None


DETACHED: Outlet = _Detached()


class DeliveryQueue:
    """The frames waiting for one connection, and where that connection is in the stream."""

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "close_reason",
        "delivered_epoch",
        "delivered_offset",
        "epoch",
        "last_offset",
        "max_bytes",
        "max_events",
        "outlet",
        "pending",
        "pending_bytes",
        "pending_overflowed",
        "skip_until",
        "state",
        "writing",
    )

    def __init__(self, *, max_events: int, max_bytes: int, replaying: bool, epoch: str, offset: str) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.state = State.REPLAYING if replaying else State.LIVE
        self.outlet = DETACHED
        self.writing = False  # the outlet has a write under way (awaited, or blocked on the socket)
        self.buffer: list[bytes] = []
        self.buffered_bytes = 0
        self.pending: list[tuple[str, bytes]] = []
        self.pending_bytes = 0
        self.pending_overflowed = False
        self.epoch = epoch  # the stream's epoch as this connection's frames carry it
        self.last_offset = offset  # of the newest frame queued for the client (live), or sent (replay)
        self.delivered_epoch = epoch  # the position of the newest frame handed to a write: where a
        self.delivered_offset = offset  # stalled connection catches up from
        self.skip_until: tuple[int, int] | None = None  # live frames up to here were sent by the replay
        self.close_reason: str | None = None

    def offer(self, batch: Batch) -> int:
        """A broker batch's frames for this connection; returns how many were queued for the client.

        An idle live connection (nothing waiting, no write under way, nothing to skip) whose bounds hold the
        whole batch gets it as one write, now; any other goes frame by frame through `push`, and what it
        queued is flushed."""
        frames = batch.frames
        if (
            self.state is State.LIVE
            and not self.buffer
            and not self.writing
            and self.skip_until is None
            and len(frames) <= self.max_events
            and len(batch.body) <= self.max_bytes
            and self.outlet.write_now(batch)
        ):
            self.last_offset = self.delivered_offset = batch.offset
            self.delivered_epoch = self.epoch
            return len(frames)
        queued = 0
        for frame, offset in zip(frames, batch.offsets, strict=True):
            queued += self.push(frame, offset)
        if self.buffer:
            self.outlet.flush()
        return queued

    def push(self, frame: bytes, offset: str) -> bool:
        """A data frame for the entry at `offset` (or a bookmark of it). True when it was queued for the
        client; a frame held back during a replay counts only when `go_live` queues it."""
        state = self.state
        if state is State.LIVE:
            if self.skip_until is not None:
                if offset_key(offset) <= self.skip_until:
                    return False
                self.skip_until = None
            return self._append(frame, offset)
        if state is State.REPLAYING and not self.pending_overflowed:
            self.pending.append((offset, frame))
            self.pending_bytes += len(frame)
            if len(self.pending) > self.max_events or self.pending_bytes > self.max_bytes:
                self.pending.clear()
                self.pending_bytes = 0
                self.pending_overflowed = True
        return False

    def push_control(self, frame: bytes, offset: str | None = None) -> bool:
        """A heartbeat, bookmark, reset or error frame (live connections only); True when queued."""
        return self.state is State.LIVE and self._append(frame, offset)

    def push_reset(self, frame: bytes, epoch: str, offset: str) -> bool:
        """A reset: the stream continues after `offset` of `epoch` (earlier offsets may follow it)."""
        if self.state is not State.LIVE:
            return False
        self.epoch = epoch
        self.skip_until = None
        return self._append(frame, offset)

    def _append(self, frame: bytes, offset: str | None) -> bool:
        if self.buffer and (
            len(self.buffer) >= self.max_events or self.buffered_bytes + len(frame) > self.max_bytes
        ):
            if not self.writing:
                self.outlet.flush()  # what waits goes first, if the socket takes it at once
            if self.buffer or self.state is not State.LIVE:
                if self.state is State.LIVE:
                    self._stall()
                return False
        if offset is not None:
            self.last_offset = offset
        self.buffer.append(frame)
        self.buffered_bytes += len(frame)
        return True

    def _stall(self) -> None:
        """Over the bound while a write is under way: leave live fan-out; the connection catches up."""
        self.state = State.STALLED
        self.buffer = []
        self.buffered_bytes = 0
        self.last_offset = self.delivered_offset
        self.skip_until = None
        self.outlet.stalled()

    def take(self) -> bytes:
        """Everything queued, as one write; its newest frame becomes the delivered position."""
        buffer = self.buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        self.buffer = []
        self.buffered_bytes = 0
        self.delivered_offset = self.last_offset
        self.delivered_epoch = self.epoch
        return data

    def close(self, reason: str) -> None:
        """End the subscription; the outlet is woken to end the response."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.close_reason = reason
        self.buffer.clear()
        self.buffered_bytes = 0
        self.pending.clear()
        self.outlet.wake()

    def catch_up(self) -> tuple[str, str]:
        """Start catching up after a stall: live frames wait in `pending` again, as during a resume.
        Returns the position (epoch, offset) to replay after: the newest frame handed to a write."""
        assert self.state is State.STALLED
        self.state = State.REPLAYING
        self.pending_overflowed = False
        return self.delivered_epoch, self.delivered_offset

    def sent(self, offset: str, epoch: str | None = None) -> None:
        """The connection wrote, itself, frames up to the entry at `offset` (replay, reset) of `epoch`
        (by default the queue's)."""
        if epoch is not None:
            self.epoch = epoch
        self.last_offset = self.delivered_offset = offset
        self.delivered_epoch = self.epoch

    def go_live(self, last_offset: str) -> int | None:
        """Hand over from replay to live delivery after `last_offset` was sent.

        Keeps the pending live frames after `last_offset` (dropping what the replay already sent) and turns
        live; returns how many it queued for the client. Returns None, staying in replay, if live frames
        were dropped meanwhile (the caller reads further from the broker and tries again), or if the
        subscription ended or stalled.
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

    def passed(self, cursor_key: tuple[int, int]) -> bool:
        """Whether live delivery has caught up with what the replay sent (the reader's cursor at
        `cursor_key` is past it): only then may a bookmark of the cursor be sent."""
        if self.skip_until is not None and cursor_key > self.skip_until:
            self.skip_until = None
        return self.skip_until is None
