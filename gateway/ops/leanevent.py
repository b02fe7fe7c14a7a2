"""An `asyncio.Event` that costs a few dozen bytes while nobody waits, for the server's per-connection events.

uvicorn gives every connection two `asyncio.Event`s (its flow control's "writable" and the request cycle's
"message"), and each holds a `collections.deque` of waiters from birth: about 760 bytes each, 1.5 KB of an
idle change stream's ~16 (loadtests/RESULTS.md, "Fourth pass"). A stream's writable event is almost never
waited on, and its message event by exactly one task. This one keeps its waiters in a list made on the first
`wait` and dropped when the last waiter leaves. Same semantics as `asyncio.Event` (`set` wakes every waiter
and stays set until `clear`; a cancelled waiter is removed), one event loop.
"""

from __future__ import annotations

import asyncio
from typing import Literal


class LeanEvent:
    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None
