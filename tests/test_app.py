"""`GatewayApp` as servers see it: an ASGI 3 application, though its `__call__` is a plain call."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS


def test_uvicorn_detects_asgi3_without_being_told(tmp_path: Path) -> None:
    """uvicorn guesses the interface from `__call__`; taken for ASGI 2, every request failed with a
    TypeError (tests that run the app in-process build `uvicorn.Config(app)` like this)."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", models=EXAMPLE_MODELS)
    app = create_app(settings)
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    assert config.interface == "asgi3"
    assert asyncio.iscoroutinefunction(app.__call__)
    if hasattr(inspect, "markcoroutinefunction"):
        assert inspect.iscoroutinefunction(app.__call__)
