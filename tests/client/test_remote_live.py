"""The remote client's snapshot and several models on one connection, against real gateway processes on Redis:
a snapshot is handed out whole, a model whose history is lost is snapshotted again by itself, and a restart
of the gateway is ridden out by resuming every model."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.client.remote import ModelReset, RemoteChangeStream, RemoteItem, Snapshot
from gateway.streams import Change
from tests.client import post
from tests.client.conftest import GatewayFactory
from tests.sse.test_multiplex import write_models


async def items_until(stream: RemoteChangeStream, done: Any, within: float = 30.0) -> list[RemoteItem]:
    items: list[RemoteItem] = []
    async with asyncio.timeout(within):
        while not done(items):
            items.append(await anext(stream))
    return items


def apply(rows: dict[Any, Any], item: RemoteItem, model: str) -> None:
    if isinstance(item, Snapshot) and item.model == model:
        rows.clear()
        rows.update({row["id"]: row for row in item.rows})
    elif isinstance(item, Change) and item.change["model"] == model:
        if item.type == "remove":
            rows.pop(item.target, None)
        else:
            rows[item.target] = item.change["data"]


async def test_one_model_snapshot_comes_whole_then_the_changes_after_it(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        await post(http, "/api/Todos", [{"title": f"r{n}", "done": n % 2 == 0} for n in range(50)])
        async with RemoteChangeStream(
            gateway.url, model="Todo", where={"done": False}, snapshot=True
        ) as stream:
            [snapshot] = await items_until(stream, lambda items: len(items) == 1)
            created = await post(http, "/api/Todos", {"title": "after"})
            [change] = await items_until(stream, lambda items: len(items) == 1)
    assert isinstance(snapshot, Snapshot)
    assert snapshot.model is None
    assert [row["title"] for row in snapshot.rows] == [f"r{n}" for n in range(1, 50, 2)]
    assert isinstance(change, Change)
    assert change.change == {"target": created["id"], "data": created, "type": "create"}


async def test_several_models_resume_over_a_restart_and_relist_a_model_that_lost_its_history(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    models = str(write_models(tmp_path / "models"))
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix, GATEWAY_MODELS=models)
    options = {"Todo": {"where": {"done": False}}}
    todos: dict[Any, Any] = {}
    colors: dict[Any, Any] = {}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        await post(http, "/api/Colors", {"name": "red"})

        async def in_sync(items: list[RemoteItem]) -> bool:
            for item in items:
                apply(todos, item, "Todo")
                apply(colors, item, "Color")
            items.clear()
            wanted_todos = (
                await http.get("/api/Todos", params={"filter": json.dumps(options["Todo"])})
            ).json()
            wanted_colors = (await http.get("/api/Colors")).json()
            return todos == {r["id"]: r for r in wanted_todos} and colors == {
                r["id"]: r for r in wanted_colors
            }

        async def follow_until_in_sync(stream: RemoteChangeStream, seen: list[RemoteItem]) -> None:
            async with asyncio.timeout(30):
                while True:
                    pending: list[RemoteItem] = [await anext(stream)]
                    seen.extend(pending)
                    if await in_sync(pending):
                        return

        seen: list[RemoteItem] = []
        async with RemoteChangeStream(
            gateway.url, models=("Todo", "Color"), options=options, snapshot=True, retry=0.05
        ) as stream:
            await follow_until_in_sync(stream, seen)
            assert {item.model for item in seen if isinstance(item, Snapshot)} == {"Todo", "Color"}
            await post(http, "/api/Todos", {"title": "open"})
            await post(http, "/api/Todos", {"title": "closed", "done": True})
            await follow_until_in_sync(stream, seen)
            assert "Todo:" in (stream.position or "")
            assert "Color:" in (stream.position or "")

            await asyncio.to_thread(gateway.stop, signal.SIGTERM)
            await asyncio.to_thread(gateway.start, 60.0)
            await post(http, "/api/Colors", {"name": "after the restart"})
            await follow_until_in_sync(stream, seen)

            client = aioredis.from_url(redis_url)
            try:  # Color's history is lost: a reset of Color alone, then its new snapshot
                await client.delete(f"{{{redis_prefix}:Color}}:s", f"{{{redis_prefix}:Color}}:epoch")
            finally:
                await client.aclose()
            before = len(seen)
            await post(http, "/api/Colors", {"name": "after the loss"})
            await follow_until_in_sync(stream, seen)
            await post(http, "/api/Todos", {"title": "still followed"})
            await follow_until_in_sync(stream, seen)
    resets = [item for item in seen[before:] if isinstance(item, ModelReset)]
    assert resets
    assert {reset.model for reset in resets} == {"Color"}
    assert any(isinstance(item, Snapshot) and item.model == "Color" for item in seen[before:])
    assert not any(isinstance(item, Snapshot) and item.model == "Todo" for item in seen[before:])


def test_options_go_with_models_and_where_with_one_model() -> None:
    with pytest.raises(ValueError, match="models="):
        RemoteChangeStream("http://x", models=("Todo",), where={"done": False})
    with pytest.raises(ValueError, match="options="):
        RemoteChangeStream("http://x", model="Todo", options={"Todo": {}})
    with pytest.raises(ValueError, match="earliest"):
        RemoteChangeStream("http://x", models=("Todo",), start="earliest")


async def test_tail_prints_a_snapshot_then_changes(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        row = await post(http, "/api/Todos", {"title": "listed"})
        process = await asyncio.create_subprocess_exec(
            *(
                sys.executable,
                "-m",
                "gateway",
                "tail",
                "Todo",
                "--url",
                gateway.url,
                "--snapshot",
                "--count",
                "1",
            ),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        created = await post(http, "/api/Todos", {"title": "then"})
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert first["type"] == "snapshot"
    assert first["rows"] == [row]
    assert json.loads(out)["data"] == created
    assert process.returncode == 0
