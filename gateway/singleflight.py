"""`SingleFlight`: concurrent awaits of one call share the call in flight instead of each making its own.

A thousand reads arriving together each asked Redis for their stream's head (the position header, taken
before the read), so a thousand commands queued for a pool of 64 connections; on a busy box the last of them
waited out the pool's timeout and their reads became 503s. Sharing is safe there because a head is only
promised to be taken *before* the caller's read: a flight that started before the caller arrived ended
before its read as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Calls `call` when no call of it is in flight; otherwise waits for the one that is."""

    def __init__(self, call: Callable[[], Awaitable[T]]) -> None:
        self._call = call
        self._flight: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        flight = self._flight
        if flight is None:
            flight = self._flight = asyncio.ensure_future(self._call())
            flight.add_done_callback(self._landed)
        # Shielded: a caller that is cancelled leaves the flight to the others (and should they all leave,
        # the shield retrieves the flight's exception, so none is reported as never retrieved).
        return await asyncio.shield(flight)

    def _landed(self, _flight: asyncio.Future[T]) -> None:
        self._flight = None
