"""A real browser: headless Chromium's own `EventSource` reconnection resumes with no gap after a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser

from gateway.config import Settings
from gateway.sse.frames import Format
from tests.conftest import EXAMPLE_MODELS
from tests.server import free_port
from tests.sse.helpers import serve

PAGE = """<!doctype html><title>live todos</title><script>
window.received = [];
window.resets = 0;
const source = new EventSource('/api/Todos/change-stream');
source.addEventListener('data', (e) => window.received.push([e.lastEventId, JSON.parse(e.data)]));
source.addEventListener('reset', () => { window.resets += 1; });
</script>"""


async def test_eventsource_resumes_across_a_restart_without_gap(
    browser: Browser, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        broker_url=redis_url,
        redis_prefix=redis_prefix,
        models=EXAMPLE_MODELS,
        retry=300,
        drain_seconds=0.2,
    )
    port = free_port()
    page = await browser.new_page()

    async def received() -> list[Any]:
        result: list[Any] = await page.evaluate("window.received")
        return result

    async def wait_for(count: int) -> list[Any]:
        async with asyncio.timeout(20):
            while len(events := await received()) < count:
                await asyncio.sleep(0.05)
        return events

    async def write(url: str, titles: list[str]) -> None:
        async with httpx.AsyncClient(base_url=url) as http:
            for title in titles:
                assert (await http.post("/api/Todos", json={"title": title})).status_code == 200

    async with serve(settings, port=port, page=PAGE) as (url, _app):
        await page.goto(f"{url}/page")
        await page.wait_for_function("window.received !== undefined")
        await asyncio.sleep(0.2)
        await write(url, ["a", "b", "c"])
        await wait_for(3)
    # The browser's server is gone; changes go on through another worker meanwhile.
    async with serve(settings) as (other, _app):
        await write(other, ["d", "e"])
    async with serve(settings, port=port, page=PAGE) as (url, _app):
        await write(url, ["f"])
        events = await wait_for(6)
        await asyncio.sleep(0.5)
        events = await received()
        resets = await page.evaluate("window.resets")
    assert [change["data"]["title"] for _, change in events] == ["a", "b", "c", "d", "e", "f"]
    assert len({position for position, _ in events}) == 6
    assert resets == 0
    assert json.dumps(events[0][1]).startswith('{"target": 1')


async def test_eventsource_refused_by_a_full_worker_reconnects_by_itself(
    browser: Browser, tmp_path: Path
) -> None:
    """A full worker's answer to an SSE request must not be a status that makes EventSource give up."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        models=EXAMPLE_MODELS,
        retry=200,
        max_connections=1,
    )
    async with serve(settings, page=PAGE) as (url, app):
        gateway = app.gateway
        model = gateway.registry.models[0]
        held = await gateway.hub.subscribe(
            model, (Format.SSE, "None", "None"), lambda: None, None, replaying=False
        )
        page = await browser.new_page()
        await page.goto(f"{url}/page")

        def refusals() -> float:
            labels = {"kind": "stream", "method": "GET", "status": "200"}
            return gateway.metrics.registry.get_sample_value("gateway_http_requests_total", labels) or 0

        async with asyncio.timeout(20):
            while refusals() < 2:  # refused, then back by itself, and refused again
                await asyncio.sleep(0.05)
        assert await page.evaluate("source.readyState") != 2  # CLOSED: it would never try again
        await gateway.hub.unsubscribe(held)
        async with asyncio.timeout(20):
            while await page.evaluate("source.readyState") != 1:  # OPEN: it came back by itself
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.post("/api/Todos", json={"title": "after the refusal"})).status_code == 200
        async with asyncio.timeout(20):
            while not await received_titles(page):
                await asyncio.sleep(0.05)
        assert await received_titles(page) == ["after the refusal"]


async def received_titles(page: Any) -> list[str]:
    received = await page.evaluate("window.received")
    return [change["data"]["title"] for _, change in received]
