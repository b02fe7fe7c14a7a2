"""What a change stream yields, in-process (`gateway.streams`) and over SSE (`gateway.client.remote`) alike.

Plain values and the small cancellation helper both iterators share; nothing here touches a broker or the
network, so a program that only follows a gateway over HTTP imports this and httpx, and nothing of the
server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

ResetReason: TypeAlias = Literal["history-expired", "epoch-changed"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Change:
    """One change object, as an SSE client receives it in `data:`, and its position (the SSE `id:`).

    `change` has the keys `target`, `where`, `data`, `type` in that order, absent ones omitted (DESIGN §4.3).
    Pass `position` as `start` (or as `Last-Event-ID`) to continue right after this change.
    """

    position: str
    change: dict[str, Any]

    @property
    def type(self) -> str:
        """`create`, `update` or `remove`."""
        return str(self.change["type"])

    @property
    def target(self) -> Any:
        return self.change.get("target")

    @property
    def data(self) -> dict[str, Any] | None:
        data: dict[str, Any] | None = self.change.get("data")
        return data

    @property
    def where(self) -> dict[str, Any] | None:
        where: dict[str, Any] | None = self.change.get("where")
        return where


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream could not continue where it was; it continues after `position` instead.

    `epoch-changed`: the broker lost its history (Redis restarted empty or was flushed). `history-expired`:
    the entries after the old position were trimmed away. Either way some changes were never delivered:
    state built from earlier changes is stale and must be rebuilt (re-list), then updated from the changes
    that follow, which are every change after `position`.
    """

    reason: ResetReason
    position: str


StreamItem: TypeAlias = Change | Reset


class StreamError(Exception):
    """A change stream cannot be opened as asked (its message says why, for people)."""


class UnknownModelError(StreamError, LookupError):
    """No model of that name (or REST plural) is served."""


class CloseSignal:
    """Lets `aclose()`, called from any task, end a read that another task is waiting on, at once."""

    def __init__(self) -> None:
        self.closed = False
        self._future: asyncio.Future[None] | None = None
        self._work: set[asyncio.Future[Any]] = set()

    async def close(self) -> None:
        """Mark closed, cancel the work in flight and wait until it has stopped."""
        self.closed = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        work = list(self._work)
        for task in work:
            task.cancel()
        if work:
            await asyncio.wait(work)

    async def race(self, work: Awaitable[_T]) -> _T | None:
        """The result of `work`, or None if the stream is (or gets) closed first; `work` is then cancelled."""
        if self.closed:
            if asyncio.iscoroutine(work):
                work.close()
            return None
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(work)
        self._work.add(task)
        try:
            await asyncio.wait((task, self._future), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
            self._work.discard(task)
        if task.cancelled():
            return None
        return task.result()

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when the stream is closed."""
        await self.race(asyncio.sleep(seconds))
