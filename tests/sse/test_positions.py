"""Positions a client can send that parse by eye but that Redis cannot read: each is an `event: reset`.

A Redis stream id is two unsigned 64-bit numbers of ASCII digits. Anything else used to reach XRANGE, fail
after the `200` and end the stream without an `id:`, so a browser retried the same position for ever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS
from tests.sse.helpers import open_stream, serve

STREAM = "/api/Todos/change-stream"
UNREADABLE = {
    "ms-of-20-digits": "{epoch}-99999999999999999999-0",
    "ms-of-2^64": "{epoch}-18446744073709551616-0",
    "seq-of-2^64": "{epoch}-1-18446744073709551616",
    "arabic-indic-digits": "{epoch}-١٢٣-0",
    "superscript-digits": "{epoch}-1²-0",
    "thousands-of-digits": "{epoch}-" + "9" * 5000 + "-0",
}


@pytest.fixture
async def client(tmp_path: Path, redis_url: str, redis_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        models=EXAMPLE_MODELS,
        broker_url=redis_url,
        redis_prefix=redis_prefix,
    )
    async with serve(settings) as (url, _app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("template", UNREADABLE.values(), ids=UNREADABLE.keys())
async def test_a_position_redis_cannot_read_is_a_reset_then_live(
    client: httpx.AsyncClient, template: str
) -> None:
    epoch = (await client.get("/api/Todos")).headers["x-change-stream-position"].split("-")[0]
    headers = {"last-event-id": template.format(epoch=epoch).encode()}  # as a browser sends it: UTF-8
    async with open_stream(client, STREAM, headers=headers) as stream, asyncio.timeout(30):
        await stream.read_until(lambda s: any(e.event == "reset" for e in s.events))
        await client.post("/api/Todos", json={"title": "new"})
        await stream.read_until(lambda s: len(s.data_events) >= 1)
    reset = stream.events[0]
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"reason": "history-expired", "position": reset.last_event_id}
    assert [c["data"]["title"] for c in stream.changes()] == ["new"]
