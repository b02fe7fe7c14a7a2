"""Snapshot over SSE (`snapshot=true`) over real HTTP, on PostgreSQL and Redis, with writes during it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.broker.continuity import Position
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.polling import eventually
from tests.sse.helpers import open_stream, serve

STREAM = "/api/Todos/change-stream"
ROWS = 10_000


@pytest.fixture
async def gateway(
    postgres_database: DatabaseFactory, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp]]:
    settings = Settings(
        database_url=await postgres_database(),
        broker_url=redis_url,
        redis_prefix=redis_prefix,
        models=EXAMPLE_MODELS,
        drain_seconds=0.1,
        relay_poll_interval=0.05,
        max_page_size=0,  # the tests compare a collection with the whole table, one GET of 10,000+ rows
        # The random writes can leave more rows than they found (creates outrun deletes that 404); at the
        # default limit of 10,000 the snapshot was then refused, one run in a few.
        snapshot_max_rows=2 * ROWS,
    )
    async with serve(settings) as (url, app), httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client, app


async def write_randomly(client: httpx.AsyncClient, stop: asyncio.Event, seed: int) -> int:
    """Creates, patches (moving rows in and out of `done: false`), updateAlls and deletes until `stop`."""
    rng = random.Random(seed)
    writes = 0
    while not stop.is_set():
        kind = rng.choice(["create", "patch", "patch", "update_all", "delete"])
        target = rng.randint(1, ROWS)
        if kind == "create":
            response = await client.post(
                "/api/Todos", json={"title": f"w{writes}", "done": rng.random() < 0.5}
            )
        elif kind == "patch":
            response = await client.patch(f"/api/Todos/{target}", json={"done": rng.random() < 0.5})
        elif kind == "update_all":
            where = json.dumps({"id": {"between": [target, target + 3]}})
            response = await client.post(f"/api/Todos/update?where={where}", json={"priority": writes})
        else:
            response = await client.delete(f"/api/Todos/{target}")
        assert response.status_code in (200, 404), response.text
        writes += 1
    return writes


def apply(collection: dict[Any, dict[str, Any]], change: dict[str, Any]) -> None:
    if change["type"] == "remove":
        collection.pop(change["target"], None)
    else:
        collection[change["target"]] = change["data"]


@pytest.mark.parametrize("where", [None, {"done": False}])
async def test_snapshot_then_live_equals_the_table_with_writes_during_it(
    gateway: tuple[httpx.AsyncClient, GatewayApp], where: dict[str, Any] | None
) -> None:
    """10,000 rows, writes running while the snapshot is read and sent: the rows plus the live changes
    equal the final table (of the filter), and no change arrives twice."""
    client, app = gateway
    rows = [{"title": f"r{n}", "done": n % 2 == 0, "priority": n} for n in range(ROWS)]
    for start in range(0, ROWS, 1000):
        assert (await client.post("/api/Todos", json=rows[start : start + 1000])).status_code == 200
    stop = asyncio.Event()
    writer = asyncio.create_task(write_randomly(client, stop, seed=ROWS))
    await asyncio.sleep(0.2)  # writes are under way before the stream opens
    options = json.dumps({"where": where} if where else {})
    collection: dict[Any, dict[str, Any]] = {}
    async with open_stream(client, f"{STREAM}?snapshot=true&options={options}") as stream:
        await stream.read_until(lambda s: any(e.event == "snapshot-end" for e in s.events), timeout=60)
        end = next(i for i, e in enumerate(stream.events) if e.event == "snapshot-end")
        snapshot = [json.loads(e.data) for e in stream.events[:end]]
        assert all(e.event == "data" and e.last_event_id == "" for e in stream.events[:end])
        assert all(change["type"] == "create" for change in snapshot)
        assert len({change["target"] for change in snapshot}) == len(snapshot) > 1000
        position = json.loads(stream.events[end].data)["position"]
        assert stream.events[end].last_event_id == position
        for change in snapshot:
            apply(collection, change)
        await asyncio.sleep(1.0)  # writes go on after snapshot-end
        stop.set()
        writes = await writer
        assert writes > 20
        query = json.dumps({"where": where} if where else {})
        applied = end + 1
        reader = asyncio.create_task(stream.read_until(lambda s: False, timeout=120))

        async def collection_matches() -> bool:
            nonlocal applied
            for event in stream.events[applied:]:
                if event.event == "data":
                    apply(collection, json.loads(event.data))
            applied = len(stream.events)
            table = (await client.get(f"/api/Todos?filter={query}")).json()
            return collection == {row["id"]: row for row in table}

        try:
            await eventually(collection_matches, within=60, what="the live collection equals GET")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        live = [e for e in stream.events[end + 1 :] if e.event == "data"]
        if where is None:
            await assert_each_entry_once(app, position, live)


async def assert_each_entry_once(app: GatewayApp, position: str, live: list[Any]) -> None:
    """Unfiltered, the live part is exactly the broker's entries after the snapshot's position."""
    start = Position.parse(position)
    entries = await app.gateway.broker.read("Todo", start.offset, 100_000)
    assert [f"{e.epoch}-{e.offset}" for e in entries] == [e.last_event_id for e in live]


async def test_a_snapshot_over_the_bound_is_a_400_that_says_to_page(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, app = gateway
    bound = app.gateway.settings.snapshot_max_rows
    chunk = app.gateway.settings.max_create_rows
    for start in range(0, bound + 1, chunk):
        rows = [{"title": "x"}] * min(chunk, bound + 1 - start)
        assert (await client.post("/api/Todos", json=rows)).status_code == 200
    response = await client.get(STREAM, params={"options": json.dumps({"snapshot": True})})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "SNAPSHOT_TOO_LARGE"
    assert "X-Change-Stream-Position" in error["message"]
    assert app.gateway.hub.count == 0  # the registration made before the query is undone
    narrowed = json.dumps({"snapshot": True, "where": {"id": {"lte": 3}}})
    async with open_stream(client, f"{STREAM}?options={narrowed}") as stream:
        await stream.read_until(lambda s: any(e.event == "snapshot-end" for e in s.events))
        assert [json.loads(e.data)["target"] for e in stream.data_events] == [1, 2, 3]


async def test_a_reconnect_with_last_event_id_resumes_instead_of_a_new_snapshot(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, _ = gateway
    head = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    await client.post("/api/Todos", json={"title": "before"})

    async def published() -> bool:  # else its change may follow the snapshot too (that overlap is allowed)
        return (await client.get("/api/Todos")).headers["x-change-stream-position"] != head

    await eventually(published, what="the write before the snapshot is published")
    async with open_stream(client, f"{STREAM}?snapshot=true") as stream:
        await stream.read_until(lambda s: any(e.event == "snapshot-end" for e in s.events))
        position = stream.parser.last_event_id
    created = (await client.post("/api/Todos", json={"title": "after"})).json()
    async with open_stream(client, f"{STREAM}?snapshot=true", headers={"Last-Event-ID": position}) as resumed:
        await resumed.read_until(lambda s: len(s.data_events) >= 1)
        assert resumed.changes() == [{"target": created["id"], "data": created, "type": "create"}]
        assert not any(e.event == "snapshot-end" for e in resumed.events)
