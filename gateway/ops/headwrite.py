"""A reply's head and the start of its body in one `write`.

uvicorn's httptools `send` writes a response's status line and headers as soon as the app sends
`http.response.start`, and its body on the next `send`: two syscalls per REST reply, two segments, and two
wake-ups of the client, where the app sends both in the same turn of the event loop. `HeadWithFirstWrite`
stands in for the transport of one request cycle until its first write after the head: it holds the head
and writes it together with that write, or alone at the end of the turn (a stream whose first event comes
later, a HEAD reply), then gives the cycle back its real transport, so every later write (a stream's
deliveries) goes straight to it.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeadWithFirstWrite:
    """The transport of `cycle` (uvicorn's `RequestResponseCycle`) until its head has been written."""

    __slots__ = ("_cycle", "_head", "_transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self._cycle = cycle
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is None:
            self._head = data
            asyncio.get_running_loop().call_soon(self._write_head_alone)
            return
        self._release()
        self._transport.write(self._head + data)

    def close(self) -> None:
        self._write_head_alone()
        self._transport.close()

    def _write_head_alone(self) -> None:
        if self._cycle.transport is self:
            self._release()
            if self._head is not None and not self._transport.is_closing():
                self._transport.write(self._head)

    def _release(self) -> None:
        self._cycle.transport = self._transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
