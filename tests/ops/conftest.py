"""An in-process gateway (memory broker, SQLite in the test's directory) with an ASGI client, for the
operations endpoints and the drain; streams themselves are exercised over real HTTP in tests/deploy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import Gateway, create_app
from gateway.config import Settings
from gateway.fanout.hub import Subscription
from gateway.sse.frames import Format
from tests.conftest import EXAMPLE_MODELS

Started = tuple[httpx.AsyncClient, Gateway]
GatewayFactory = Callable[..., AbstractAsyncContextManager[Started]]


@pytest.fixture
def in_process(tmp_path: Path) -> GatewayFactory:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Started]:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}", models=EXAMPLE_MODELS, **overrides
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
                yield client, app.gateway

    return start


async def subscribe(gateway: Gateway) -> Subscription:
    """Register one unfiltered SSE subscriber on the Todo stream, as the change-stream route does."""
    model = gateway.registry.models[0]
    return await gateway.hub.subscribe(
        model, (Format.SSE, repr(None), repr(None)), lambda: None, None, replaying=False
    )


def assert_told_to_reconnect(reply: httpx.Response, reason: str) -> None:
    """A refused SSE request: a 200 whose whole body is a jittered `retry:` and a comment naming `reason`,
    so that every EventSource reconnects by itself (a non-200 makes it give up for good)."""
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream"
    retry, comment, blank, end = reply.text.split("\n")
    assert retry.startswith("retry: ")
    assert 2400 <= int(retry.removeprefix("retry: ")) <= 3600  # GATEWAY_RETRY's 3000 ms, jittered ±20 %
    assert comment.startswith(": ")
    assert reason in comment
    assert (blank, end) == ("", "")
