"""The hub's coarse clock: the loop's time as of the last tick, shared by every connection of the worker.

A connection compares its deadlines (heartbeat, bookmark, credential expiry) with it when the tick visits
it, and stamps its writes with it, so no connection keeps a timer or asks the loop for the time per write.
It is at most one tick (≤ 1 s) behind, which is well inside every interval it serves.
"""

from __future__ import annotations


class CoarseClock:
    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now
