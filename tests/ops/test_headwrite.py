"""A reply's head goes out with its body in one write (`gateway.ops.headwrite`), alone when the body comes in
a later turn of the event loop, and every later write goes straight to the transport.

The protocol is uvicorn's own, as `gateway serve` runs it, on a transport that records its writes."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.ops.httpguard import GuardedHttpToolsProtocol, HttpLimits


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Protocol(GuardedHttpToolsProtocol):
    limits = HttpLimits(header_timeout=5, body_timeout=5, max_header_bytes=8192, max_headers=50)


async def exchange(app: Any, request: bytes, *, turns: float = 0.05) -> RecordingTransport:
    config = Config(app=app, http="httptools", lifespan="off", proxy_headers=False)
    config.load()
    protocol = Protocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.sleep(turns)
    protocol.connection_lost(None)
    return transport


async def reply(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(0.01)
    for part in (b"one", b"two"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_a_reply_is_one_write() -> None:
    transport = await exchange(reply, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    (write,) = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b"\r\n\r\n{}")


async def test_two_replies_on_one_connection_are_one_write_each() -> None:
    transport = await exchange(reply, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
    assert len(transport.writes) == 2
    assert all(write.startswith(b"HTTP/1.1 200") and write.endswith(b"{}") for write in transport.writes)


async def test_a_head_whose_body_comes_later_goes_alone_then_the_body_straight_to_the_transport() -> None:
    transport = await exchange(stream, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    head, *chunks = transport.writes
    assert head.startswith(b"HTTP/1.1 200")
    assert head.endswith(b"\r\n\r\n")
    assert chunks == [b"3\r\none\r\n", b"3\r\ntwo\r\n", b"0\r\n\r\n"]


async def test_a_head_reply_with_no_body_is_written() -> None:
    transport = await exchange(reply, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
    (write,) = transport.writes
    assert write.startswith(b"HTTP/1.1 200")
    assert write.endswith(b"\r\n\r\n")


async def test_a_reply_that_closes_the_connection_writes_its_head_first() -> None:
    transport = await exchange(reply, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    (write,) = transport.writes
    assert write.endswith(b"{}")
    assert transport.closed
