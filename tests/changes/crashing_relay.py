"""A gateway relay that dies by SIGKILL right after its Nth append to the broker, before it marks the rows.

Run as `python -m tests.changes.crashing_relay N` with the usual GATEWAY_* environment. The gateway is built
exactly as `gateway serve` builds it; only this process's broker object is wrapped, so production code has no
hook for it. The process never exits by itself: it is killed by its own hand or by the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from gateway.app import build_gateway
from gateway.broker.base import Lease, Record
from gateway.config import load_settings


async def main(die_after: int) -> None:
    gateway = build_gateway(load_settings())
    broker = gateway.broker
    append = broker.append
    appended = 0

    async def append_then_die(stream: str, records: Sequence[Record], *, lease: Lease) -> list[str]:
        nonlocal appended
        offsets = await append(stream, records, lease=lease)
        appended += 1
        if appended >= die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return offsets

    broker.append = append_then_die  # type: ignore[method-assign]
    gateway.relay.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
