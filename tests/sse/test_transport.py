"""Live chunks straight to uvicorn's transport: only behind its httptools `send`, and only when that `send`
would have written at once; the client reads the same chunked body either way."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from gateway.config import Settings
from gateway.sse import connection as connection_module
from gateway.sse.transport import direct_cycle, write_chunk, write_wire
from tests.conftest import EXAMPLE_MODELS
from tests.sse.helpers import open_stream, serve

HEADERS = [(b"content-type", b"text/event-stream")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    assert direct_cycle(send) is None  # not started yet: not known to be chunked
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    cycle = direct_cycle(send)
    marks = [b"direct" if cycle is not None else b"asgi"]
    if cycle is not None:
        assert write_chunk(cycle, b"one;")
        cycle.flow.write_paused = True  # as when the client's socket is full: uvicorn's send would wait
        assert not write_chunk(cycle, b"never;")
        cycle.flow.write_paused = False
        assert write_chunk(cycle, b"two;")
    await send({"type": "http.response.body", "body": b"|" + b"".join(marks), "more_body": False})


@asynccontextmanager
async def served(http: str) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, http=http, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize(("http", "body"), [("httptools", b"one;two;|direct"), ("h11", b"|asgi")])
async def test_chunks_go_to_the_transport_only_behind_httptools(http: str, body: bytes) -> None:
    async with served(http) as url, httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == body


async def test_a_send_that_is_not_uvicorns_gets_none() -> None:
    async def send(message: object) -> None:
        return None

    assert direct_cycle(send) is None


async def test_the_gateways_live_deliveries_take_the_direct_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind the gateway's own server a live delivery is written to the transport (if uvicorn changed
    what `direct_cycle` recognises, this fails instead of every delivery quietly taking the slower send)."""
    direct: list[bool] = []

    def recording(cycle: Any, wire: bytes) -> bool:
        written = write_wire(cycle, wire)
        direct.append(written)
        return written

    monkeypatch.setattr(connection_module, "write_wire", recording)
    settings = Settings(models=EXAMPLE_MODELS, database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
    async with (
        serve(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        open_stream(client, "/api/Todos/change-stream") as stream,
    ):
        await stream.read_until(lambda s: s.parser.last_event_id != "")
        assert (await client.post("/api/Todos", json={"title": "direct"})).status_code == 200
        await stream.read_until(lambda s: len(s.data_events) == 1)
    assert [c["data"]["title"] for c in stream.changes()] == ["direct"]
    assert direct == [True]
