"""An in-process gateway per test (real database, memory broker) and an HTTP client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import Gateway, create_app
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def serve_in_process(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """Run the app's lifespan and hand out a client that talks to it through ASGI."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client, app.gateway


@pytest.fixture
def gateway_factory(database_url: str) -> ClientFactory:
    """Start a gateway on this test's database with the given models and settings."""

    @asynccontextmanager
    async def start(models: Path = EXAMPLE_MODELS, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(database_url=database_url, models=models, **overrides)
        async with serve_in_process(settings) as (client, _gateway):
            yield client

    return start


@pytest.fixture
async def client(gateway_factory: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway serving the example Todo model."""
    async with gateway_factory() as client:
        yield client
