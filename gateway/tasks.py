"""Stopping tasks for good on Python 3.11, where a cancellation can be taken back.

Python 3.11's `asyncio.wait_for` returns the inner result instead of raising when the cancellation lands
just as the inner awaitable finishes (cpython gh-86296, fixed in 3.12), and redis-py sends every command of
a client with a socket timeout through it. So one cancellation in six landing during a command was lost:
the task carried on as if never cancelled. A relay's lease loop then slept and renewed its lease forever,
and whoever awaited it after one `cancel()` (the relay's `aclose`, a worker's shutdown) waited forever.
`cancel_and_wait` cancels again whatever is still running after a grace, until it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_AFTER = 1.0
"""Seconds a cancelled task has to finish before it is cancelled again: long enough for its own clean-up
(closing a connection, releasing a lease), which a second cancellation would cut short."""


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any] | None], *, grace: float = RECANCEL_AFTER
) -> None:
    """Cancel `tasks` and return once every one has ended; their exceptions are retrieved, not raised."""
    futures = [task for task in tasks if task is not None]
    pending = {task for task in futures if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace)
    for task in futures:
        if not task.cancelled():
            task.exception()
