"""The browser side in Debian's Chromium: the live page at `/` and the JS client it serves, against real
gateway processes on PostgreSQL and Redis, through random writes, SIGTERM, SIGKILL and lost Redis data."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page

from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.polling import eventually
from tests.server import ROOT, GatewayProcess
from tests.sse.helpers import serve
from tests.sse.test_multiplex import write_models

PLURALS = {"Todo": "Todos", "Color": "Colors", "Shape": "Shapes"}
OPEN_TODOS = {"where": {"done": False}, "order": "priority DESC"}


async def test_the_client_is_served_as_it_is_in_clients_js(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", models=EXAMPLE_MODELS)
    async with serve(settings) as (url, _app), httpx.AsyncClient(base_url=url) as http:
        client = await http.get("/client/live.js")
        page = await http.get("/")
        models = (await http.get("/page/models.json")).json()
    assert client.headers["content-type"].startswith("text/javascript")
    assert client.content == (ROOT / "clients" / "js" / "live.js").read_bytes()
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert models["models"][0]["plural"] == "Todos"


async def test_the_page_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", models=EXAMPLE_MODELS, page=False
    )
    async with serve(settings) as (url, _app), httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/")
        client = await http.get("/client/live.js")
    assert page.status_code == 404
    assert page.json()["error"]["statusCode"] == 404
    assert client.status_code == 200


@pytest.fixture
async def gateway(
    postgres_database: DatabaseFactory, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[GatewayProcess]:
    env = {
        "GATEWAY_DATABASE_URL": await postgres_database(),
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_MODELS": str(write_models(tmp_path / "models")),
        "GATEWAY_DRAIN_SECONDS": "0.3",
        "GATEWAY_RETRY": "300",
        "GATEWAY_HEARTBEAT": "2",
        "GATEWAY_RELAY_POLL_INTERVAL": "0.05",
    }
    process = GatewayProcess(env, log_path=tmp_path / "gateway.log")
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.kill)


async def wait_live(page: Page) -> None:
    """Until the page's connection is live (polled with `evaluate`: the page's CSP forbids eval)."""

    async def live() -> bool:
        return bool(await page.evaluate("window.gatewayPage?.connection.state === 'live'"))

    await eventually(live, within=30, what="the page's connection is live")


async def page_rows(page: Page, name: str) -> Any:
    return await page.evaluate(f"window.gatewayPage.collections[{json.dumps(name)}].rows")


async def random_writes(http: httpx.AsyncClient, rng: random.Random, count: int) -> None:
    """Creates, patches, updateAll and deletes on the three models; Todos enter and leave `done: false`."""
    for n in range(count):
        model = rng.choice(list(PLURALS))
        plural = PLURALS[model]
        kind = rng.choice(["create", "create", "patch", "update_all", "delete"])
        target = rng.randint(1, n // 3 + 2)
        if kind == "create":
            body = {"title": f"t{n}", "done": rng.random() < 0.5, "priority": rng.randint(0, 9)}
            response = await http.post(f"/api/{plural}", json=body if model == "Todo" else {"name": f"n{n}"})
        elif kind == "patch":
            body = {"done": rng.random() < 0.5, "priority": rng.randint(0, 9)}
            response = await http.patch(
                f"/api/{plural}/{target}", json=body if model == "Todo" else {"name": f"p{n}"}
            )
        elif kind == "update_all":
            where = json.dumps({"id": {"between": [target, target + 2]}})
            body = {"done": rng.random() < 0.5} if model == "Todo" else {"name": f"u{n}"}
            response = await http.post(f"/api/{plural}/update?where={where}", json=body)
        else:
            response = await http.delete(f"/api/{plural}/{target}")
        assert response.status_code in (200, 404), response.text


async def test_page_collections_equal_get_through_writes_restarts_and_lost_redis_data(
    browser: Browser, gateway: GatewayProcess, redis_url: str, redis_prefix: str
) -> None:
    page = await browser.new_page()
    await page.goto(f"{gateway.url}/")
    await wait_live(page)
    await page.evaluate(
        """async (options) => {
            const { Connection } = await import('/client/live.js');
            const filtered = new Connection({ key: 'filtered' });
            window.openTodos = filtered.live('Todo', options);
        }""",
        OPEN_TODOS,
    )
    rng = random.Random(300)

    async def matches() -> bool:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            for name, plural in PLURALS.items():
                if await page_rows(page, name) != (await http.get(f"/api/{plural}")).json():
                    return False
            wanted = (await http.get("/api/Todos", params={"filter": json.dumps(OPEN_TODOS)})).json()
        return bool(await page.evaluate("window.openTodos.rows") == wanted)

    async def phase(what: str, writes: int) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
            await random_writes(http, rng, writes)
        await eventually(matches, within=60, what=f"the page's collections equal GET after {what}")

    await phase("random writes", 100)
    await asyncio.to_thread(gateway.stop)
    await asyncio.to_thread(gateway.start)
    await phase("a SIGTERM of the worker", 70)
    await asyncio.to_thread(gateway.kill)
    await asyncio.to_thread(gateway.start)
    await phase("a SIGKILL of the worker", 70)
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{redis_prefix}*")]
        await client.delete(*keys)
    finally:
        await client.aclose()
    await phase("Redis losing its data", 60)
    assert len(await page_rows(page, "Todo")) > 0
    assert await page.text_content("#state") == "live"


async def test_the_page_shows_a_row_written_by_curl_within_a_second(
    browser: Browser, gateway: GatewayProcess, tmp_path: Path
) -> None:
    page = await browser.new_page(viewport={"width": 1100, "height": 700})
    await page.goto(f"{gateway.url}/")
    await wait_live(page)
    body = json.dumps({"title": "written by curl", "priority": 3})
    started = time.monotonic()
    curl = await asyncio.create_subprocess_exec(
        *(
            "curl",
            "-sf",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            body,
            f"{gateway.url}/api/Todos",
        ),
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await curl.wait() == 0
    await page.get_by_text("written by curl").wait_for(timeout=10_000)
    shown = time.monotonic() - started
    print(f"curl → row on the page: {shown * 1000:.0f} ms")
    screenshot = tmp_path / "page.png"
    await page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    assert shown < 1.0


async def test_two_tabs_share_one_connection_and_the_survivor_takes_over(
    browser: Browser, gateway: GatewayProcess
) -> None:
    """Tabs of one origin elect a leader (Web Locks) that holds the only stream and broadcasts it; when
    the leader's tab closes, the other tab opens the stream and resumes."""
    context = await browser.new_context()
    streams: list[str] = []
    context.on(
        "request", lambda request: streams.append(request.url) if "change-stream" in request.url else None
    )
    first = await context.new_page()
    await first.goto(f"{gateway.url}/")
    await wait_live(first)
    second = await context.new_page()
    await second.goto(f"{gateway.url}/")
    await wait_live(second)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        created = (await http.post("/api/Colors", json={"name": "seen by both tabs"})).json()

        async def both_show_it() -> bool:
            return created in await page_rows(first, "Color") and created in await page_rows(second, "Color")

        await eventually(both_show_it, what="both tabs show the row")
        assert len(streams) == 1, streams
        await first.close()
        created = (await http.post("/api/Colors", json={"name": "after the leader left"})).json()

        async def second_shows_it() -> bool:
            return created in await page_rows(second, "Color")

        await eventually(second_shows_it, within=30, what="the remaining tab takes over the stream")
        assert len(streams) == 2
        assert await page_rows(second, "Color") == (await http.get("/api/Colors")).json()
    await context.close()


async def test_the_forms_create_edit_and_delete(browser: Browser, gateway: GatewayProcess) -> None:
    page = await browser.new_page()
    await page.goto(f"{gateway.url}/")
    await wait_live(page)
    todo = page.locator("#model-Todo")
    await todo.locator("input[name=title]").fill("from the form")
    await todo.locator("input[name=priority]").fill("7")
    await todo.get_by_role("button", name="Create").click()
    row = todo.locator("tbody tr", has_text="from the form")
    await row.wait_for()
    await row.get_by_role("button", name="Edit").click()
    await todo.locator("input[name=title]").fill("edited in the form")
    await todo.locator("input[name=done]").check()
    await todo.get_by_role("button", name="Save #1").click()
    await todo.locator("tbody tr", has_text="edited in the form").wait_for()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/api/Todos")).json() == [
            {"title": "edited in the form", "done": True, "priority": 7, "id": 1}
        ]
        await todo.locator("tbody tr", has_text="edited").get_by_role("button", name="Delete").click()
        await todo.locator("tbody tr").first.wait_for(state="detached")
        assert (await http.get("/api/Todos")).json() == []
        await todo.locator("input[name=title]").fill("")
        await todo.get_by_role("button", name="Create").click()
        await todo.locator(".error").get_by_text("title").wait_for()  # the gateway's 422, shown
