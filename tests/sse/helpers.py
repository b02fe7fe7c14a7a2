"""Test clients for change streams: read a stream over real HTTP with a spec-compliant SSE parser."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from gateway.app import GatewayApp, create_app
from gateway.client.sse import ServerSentEvent, SSEParser
from gateway.config import Settings
from tests.server import free_port


@dataclass
class OpenStream:
    """A change stream being read: its response, its parser, and every event parsed so far."""

    response: httpx.Response
    parser: SSEParser = field(default_factory=SSEParser)
    events: list[ServerSentEvent] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    _chunks: AsyncIterator[bytes] | None = None

    async def read_until(self, done: Callable[[OpenStream], bool], timeout: float = 10.0) -> None:
        """Read until `done(self)` holds; fails on timeout or if the server ends the stream first."""
        if self._chunks is None:
            self._chunks = self.response.aiter_raw()
        async with asyncio.timeout(timeout):
            while not done(self):
                chunk = await anext(self._chunks)
                self.raw.extend(chunk)
                self.events.extend(self.parser.feed(chunk))

    async def read_events(self, count: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        await self.read_until(lambda s: len(s.events) >= count, timeout)
        return self.events[:count]

    @property
    def data_events(self) -> list[ServerSentEvent]:
        return [e for e in self.events if e.event == "data"]

    def changes(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.data_events]


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> AsyncIterator[OpenStream]:
    async with client.stream(method, path, headers=headers, **kwargs) as response:
        yield OpenStream(response)


@asynccontextmanager
async def serve(
    settings: Settings, *, port: int | None = None, page: str | None = None, mount: str = "/"
) -> AsyncIterator[tuple[str, GatewayApp]]:
    """A real uvicorn server (httptools) running `create_app(settings)` in this event loop, so a test can
    look inside the app (hub counts, tasks) while clients talk real HTTP to it. `page`, if given, is served
    as HTML at `/page` (same origin as the API, as a browser test needs); `mount` is where the gateway is
    mounted in that outer app."""
    app = create_app(settings)
    served: Any = app if page is None and mount == "/" else _with_page(app, page or "", mount)
    config = uvicorn.Config(
        served, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[assignment]  # leave pytest's signals alone
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{config.port}", app
    finally:
        app.gateway.drain.begin()  # end open streams, or uvicorn waits for them
        server.should_exit = True
        await task


def _with_page(app: GatewayApp, page: str, mount: str) -> Starlette:
    async def html(_request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return Starlette(
        routes=[Route("/page", html), Mount(mount, app=app)],
        lifespan=lambda _outer: app.router.lifespan_context(app),
    )
