"""A live body chunk straight to uvicorn's transport, where its ASGI `send` would not wait anyway.

For one delivery the ASGI `send` is a coroutine created, driven and finished around one `transport.write`,
and a message dict built for it (loadtests/RESULTS.md measures what skipping it saves). This does exactly
what uvicorn's httptools `send` does for a body chunk of a chunked response whose transport is not
paused: write `<length in hex>\\r\\n<body>\\r\\n`. Whenever that `send` could do anything else (the
transport is paused and it would wait, the client left, the response is complete, not chunked, HEAD) or the
server is not uvicorn's httptools protocol (h11, another server, the multiplexed stream's own `send`), the
caller uses the ASGI `send` as before. Both write to the same transport in the order they are called.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Send

HTTPTOOLS_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")


def direct_cycle(send: Send) -> Any | None:
    """uvicorn's request cycle behind `send`, when body chunks may be written to its transport directly
    (a started, chunked, non-HEAD response of its httptools protocol); else None."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or getattr(send, "__name__", "") != "send":
        return None
    kind = type(cycle)
    if (kind.__module__, kind.__qualname__) != HTTPTOOLS_CYCLE:
        return None
    if not cycle.response_started or cycle.chunked_encoding is not True or cycle.scope["method"] == "HEAD":
        return None
    return cycle


def chunk(body: bytes) -> bytes:
    """`body` as one chunk of a chunked response, as uvicorn's `send` frames it."""
    return b"%x\r\n%b\r\n" % (len(body), body)


def write_chunk(cycle: Any, body: bytes) -> bool:
    """Write `body` as one chunk now, if uvicorn's `send` would have written it without waiting."""
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
        return False
    cycle.transport.write(chunk(body))
    return True


def write_wire(cycle: Any, wire: bytes) -> bool:
    """Write `wire`, already framed by `chunk` (and shared by many connections), like `write_chunk`."""
    if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
        return False
    cycle.transport.write(wire)
    return True
