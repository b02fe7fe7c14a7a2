"""The change-stream endpoint over real HTTP (uvicorn in this process, embedded broker, SQLite)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.config import Settings
from gateway.ops.logs import ACCESS_LOGGER
from tests.conftest import EXAMPLE_MODELS
from tests.sse.helpers import open_stream, serve

STREAM = "/api/Todos/change-stream"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp]]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        models=EXAMPLE_MODELS,
        heartbeat=0.5,
        bookmark_interval=0.5,
        drain_seconds=0.1,
    )
    async with serve(settings) as (url, app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, app


def has_data(count: int) -> Any:
    return lambda stream: len(stream.data_events) >= count


async def test_wire_format_matches_the_contract(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    async with open_stream(client, STREAM + "?_format=event-stream") as stream:
        headers = stream.response.headers
        assert headers["content-type"] == "text/event-stream"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in headers
        await stream.read_until(lambda s: s.parser.last_event_id != "")
        start = stream.parser.last_event_id
        created = (await client.post("/api/Todos", json={"title": "a", "priority": 1})).json()
        await stream.read_until(has_data(1))
    text = bytes(stream.raw).decode()
    assert text.startswith("retry: ")
    retry = int(text.split("\n", 1)[0].removeprefix("retry: "))
    assert 2400 <= retry <= 3600
    event = stream.data_events[0]
    frame = f"id: {event.last_event_id}\nevent: data\ndata: {event.data}\n\n"
    assert text == f"retry: {retry}\n:ok\n\nid: {start}\n\n" + frame
    assert json.loads(event.data) == {"target": created["id"], "data": created, "type": "create"}
    assert event.data == '{"target":1,"data":{"title":"a","done":false,"priority":1,"id":1},"type":"create"}'


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("", None, "text/event-stream"),
        ("", "*/*", "text/event-stream"),
        ("?_format=json", "*/*", "text/event-stream"),
        ("?_format=event-stream", "application/json", "text/event-stream"),
        ("", "text/event-stream", "text/event-stream"),
        ("", "application/json", "application/x-ndjson"),
        ("?_format=json", "text/plain", "application/x-ndjson"),
    ],
)
async def test_format_negotiation_follows_loopback(
    gateway: tuple[httpx.AsyncClient, GatewayApp], query: str, accept: str | None, expected: str
) -> None:
    client, _ = gateway
    headers = {"accept": accept} if accept else {}
    if accept is None:
        client.headers.pop("accept", None)
    async with open_stream(client, STREAM + query, headers=headers) as stream:
        assert stream.response.headers["content-type"] == expected


async def test_ndjson_lines_carry_positions(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    async with open_stream(client, STREAM, headers={"accept": "application/json"}) as stream:
        await stream.read_until(lambda s: s.raw.count(b"\n") >= 1)
        await client.post("/api/Todos", json={"title": "n"})
        await stream.read_until(lambda s: b'"event":"data"' in s.raw)
    lines = [json.loads(line) for line in bytes(stream.raw).splitlines() if line.strip()]
    assert set(lines[0]) == {"id"}
    assert lines[1]["event"] == "data"
    assert lines[1]["data"]["type"] == "create"
    assert lines[1]["id"] > lines[0]["id"]


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"params": {"options": "notjson"}}, "Value is not an object."),
        ({"params": {"options": "[1]"}}, "Value is not an object."),
        ({"params": {"options": '{"where":{"nope":1}}'}}, "nope"),
        ({"params": {"options[where][priority][gt]": "high"}}, "priority"),
        ({"method": "POST", "json": {"options": {"where": {"done": {"foo": 1}}}}}, "foo"),
        ({"method": "POST", "content": b"{bad", "headers": {"content-type": "application/json"}}, "JSON"),
        ({"headers": {"options": "[]"}}, "Value is not an object."),
    ],
)
async def test_bad_options_are_400_before_the_stream_starts(
    gateway: tuple[httpx.AsyncClient, GatewayApp], request_kwargs: dict[str, Any], message: str
) -> None:
    client, app = gateway
    method = request_kwargs.pop("method", "GET")
    response = await client.request(method, STREAM, **request_kwargs)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["statusCode"], error["name"]) == (400, "Error")
    assert message in error["message"]
    assert app.gateway.hub.count == 0


async def test_options_from_query_body_brackets_and_header(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, _ = gateway
    ways = [
        {"params": {"options": '{"where":{"title":"t1"}}'}},
        {"params": {"options[where][title]": "t1"}},
        {"headers": {"options": '{"where":{"title":"t1"}}'}},
        {"method": "POST", "json": {"options": {"where": {"title": "t1"}}}},
    ]
    for kwargs in ways:
        method = kwargs.pop("method", "GET")
        async with open_stream(client, STREAM, method=method, **kwargs) as stream:
            await stream.read_until(lambda s: s.parser.last_event_id != "")
            await client.post("/api/Todos", json={"title": "t0"})
            await client.post("/api/Todos", json={"title": "t1"})
            await stream.read_until(has_data(1))
            assert [c["data"]["title"] for c in stream.changes()] == ["t1"], kwargs


async def test_filtered_stream_enter_and_leave(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    options = json.dumps({"where": {"done": True}, "fields": ["title", "done"]})
    async with open_stream(client, STREAM, params={"options": options}) as stream:
        await stream.read_until(lambda s: s.parser.last_event_id != "")
        first = (await client.post("/api/Todos", json={"title": "a"})).json()["id"]
        await client.post("/api/Todos", json={"title": "b", "done": True})
        await client.patch(f"/api/Todos/{first}", json={"done": True})
        await client.patch(f"/api/Todos/{first}", json={"priority": 5})
        await client.patch(f"/api/Todos/{first}", json={"done": False})
        await client.post("/api/Todos/update", params={"where": "{}"}, json={"done": True})
        await client.delete(f"/api/Todos/{first}")
        await client.delete("/api/Todos/2")
        await stream.read_until(has_data(8))
    assert stream.changes() == [
        {"target": 2, "data": {"title": "b", "done": True}, "type": "create"},
        {"target": 1, "data": {"title": "a", "done": True}, "type": "create"},  # entered the filter
        {"target": 1, "data": {"title": "a", "done": True}, "type": "update"},
        {"target": 1, "where": {"id": 1}, "type": "remove"},  # left the filter
        {"target": 1, "data": {"title": "a", "done": True}, "type": "create"},  # updateAll brought it back
        {"target": 2, "where": {"id": 2}, "data": {"title": "b", "done": True}, "type": "update"},
        {"target": 1, "where": {"id": 1}, "type": "remove"},
        {"target": 2, "where": {"id": 2}, "type": "remove"},
    ]


async def test_bookmarks_move_the_last_event_id_without_events(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, _ = gateway
    async with open_stream(client, STREAM, params={"options": '{"where":{"done":true}}'}) as stream:
        await stream.read_until(lambda s: s.parser.last_event_id != "")
        start = stream.parser.last_event_id
        await client.post("/api/Todos", json={"title": "not for this subscriber"})
        head = start
        async with asyncio.timeout(5):
            while head == start:  # until the relay has published the write
                head = (await client.get("/api/Todos/count")).headers["x-change-stream-position"]
        await stream.read_until(lambda s: s.parser.last_event_id == head, timeout=5)
    assert head != start
    assert stream.data_events == []


async def test_heartbeat_comments_keep_idle_streams_alive(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, _ = gateway
    async with open_stream(client, STREAM) as stream:
        await stream.read_until(lambda s: " ping" in s.parser.comments, timeout=5)


async def test_list_then_watch_misses_nothing(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    await client.post("/api/Todos", json={"title": "before"})
    listed = await client.get("/api/Todos")
    position = listed.headers["x-change-stream-position"]
    for header_route in ("/api/Todos/count", "/api/Todos/findOne"):
        assert "x-change-stream-position" in (await client.get(header_route)).headers
    await client.post("/api/Todos", json={"title": "after-1"})
    await client.post("/api/Todos", json={"title": "after-2"})
    async with open_stream(client, STREAM, params={"lastEventId": position}) as stream:
        await stream.read_until(lambda s: any(c["data"]["title"] == "after-2" for c in s.changes()))
    titles = [c["data"]["title"] for c in stream.changes()]
    assert titles[-2:] == ["after-1", "after-2"]
    assert set(titles) <= {"before", "after-1", "after-2"}


async def test_resume_replays_exactly_what_was_missed(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    async with open_stream(client, STREAM) as stream:
        for n in range(5):
            await client.post("/api/Todos", json={"title": f"t{n}"})
        await stream.read_until(has_data(5))
    events = stream.data_events
    for cut in range(5):
        headers = {"last-event-id": events[cut].last_event_id}
        async with open_stream(client, STREAM, headers=headers) as resumed:
            await resumed.read_until(has_data(4 - cut))
            await asyncio.sleep(0.05)
            await resumed.read_until(lambda s: True)
        assert [e.data for e in resumed.data_events] == [e.data for e in events[cut + 1 :]]
        assert [e.last_event_id for e in resumed.data_events] == [e.last_event_id for e in events[cut + 1 :]]


@pytest.mark.parametrize(
    ("make_position", "reason", "titles"),
    [
        (lambda p: "garbage", "history-expired", ["new"]),  # nothing is known: from the head
        (lambda p: "zzzzzzzz" + p[8:], "epoch-changed", ["old", "new"]),  # from the epoch's start
        (lambda p: p.rsplit("-", 2)[0] + "-99999999999999-0", "history-expired", ["new"]),  # the future
        (lambda p: p.rsplit("-", 2)[0] + "-18446744073709551616-0", "history-expired", ["new"]),  # > 2^64
        (lambda p: p.rsplit("-", 2)[0] + "-\u0661-0", "history-expired", ["new"]),  # a non-ASCII digit
    ],
)
async def test_unusable_positions_get_a_reset_then_continue(
    gateway: tuple[httpx.AsyncClient, GatewayApp], make_position: Any, reason: str, titles: list[str]
) -> None:
    """Where the stream continues after the reset is the continuity rule's (`gateway.broker.continuity`)."""
    client, _ = gateway
    empty = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    await client.post("/api/Todos", json={"title": "old"})
    position = empty
    async with asyncio.timeout(5):
        while position == empty:  # until "old" is in the stream, so it cannot arrive live later
            position = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    async with open_stream(client, STREAM, params={"lastEventId": make_position(position)}) as stream:
        await stream.read_until(lambda s: any(e.event == "reset" for e in s.events))
        reset = stream.events[0]
        await client.post("/api/Todos", json={"title": "new"})
        await stream.read_until(has_data(len(titles)))
    assert reset.event == "reset"
    data = json.loads(reset.data)
    assert data == {"reason": reason, "position": reset.last_event_id}
    assert [c["data"]["title"] for c in stream.changes()] == titles


async def test_dropped_connections_free_everything(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, app = gateway
    hub = app.gateway.hub
    baseline_tasks = len(asyncio.all_tasks())
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    position = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    await client.post("/api/Todos", json={"title": "replayed"})
    async with httpx.AsyncClient(base_url=str(client.base_url), limits=limits, timeout=20) as churn:

        async def open_and_drop(n: int) -> None:
            options = {"options": json.dumps({"where": {"priority": n % 7}})} if n % 2 else {}
            resume = {"last-event-id": position} if n % 3 == 0 else {}  # these replay first
            async with open_stream(churn, STREAM, params=options, headers=resume) as stream:
                await stream.read_until(lambda s: b":ok" in s.raw)

        for start in range(0, 2000, 200):
            await asyncio.gather(*(open_and_drop(n) for n in range(start, start + 200)))
    async with asyncio.timeout(30):
        while hub.count or hub.readers or len(asyncio.all_tasks()) > baseline_tasks:
            await asyncio.sleep(0.02)
    assert hub.queues() == []
    metrics = (await client.get("/metrics")).text
    assert 'gateway_stream_connections{model="Todo"} 0.0' in metrics
    assert 'gateway_stream_connections_opened_total{model="Todo"} 2000.0' in metrics


@pytest.mark.parametrize("resume", [False, True], ids=["live", "resumed"])
async def test_a_client_leaving_is_logged_as_such(
    gateway: tuple[httpx.AsyncClient, GatewayApp], caplog: pytest.LogCaptureFixture, resume: bool
) -> None:
    client, app = gateway
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    position = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    await client.post("/api/Todos", json={"title": "a"})
    headers = {"last-event-id": position} if resume else {}
    async with open_stream(client, STREAM, headers=headers) as stream:
        await stream.read_until(has_data(1) if resume else lambda s: s.parser.last_event_id != "")
    async with asyncio.timeout(10):
        while app.gateway.hub.count:
            await asyncio.sleep(0.02)
    (closed,) = [r for r in caplog.records if r.getMessage() == "stream close"]
    assert closed.fields["reason"] == "client"  # type: ignore[attr-defined]


async def test_a_gateway_mounted_under_a_prefix_serves_its_streams_there(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", models=EXAMPLE_MODELS)
    async with (
        serve(settings, mount="/gw") as (url, _),
        httpx.AsyncClient(base_url=url + "/gw", timeout=10) as client,
    ):
        bad = await client.get(STREAM, params={"options": "[]"})
        assert (bad.status_code, bad.json()["error"]["message"]) == (400, "Value is not an object.")
        async with open_stream(client, STREAM) as stream:
            await stream.read_until(lambda s: s.parser.last_event_id != "")
            await client.post("/api/Todos", json={"title": "mounted"})
            await stream.read_until(has_data(1))
        assert [c["data"]["title"] for c in stream.changes()] == ["mounted"]


async def test_unfiltered_streams_share_the_stored_bytes(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    """Without `where` or `fields`, a group sends the change JSON as stored: no decode, no re-encode."""
    client, app = gateway
    async with (
        open_stream(client, STREAM) as plain,
        open_stream(client, STREAM + "?options[fields][0]=title") as projected,
    ):
        for stream in (plain, projected):
            await stream.read_until(lambda s: s.parser.last_event_id != "")
        groups = list(app.gateway.hub.readers["Todo"].groups.values())
        assert sorted(group.filtered for group in groups) == [False, True]


async def test_resumed_streams_get_heartbeats_too(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    position = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    await client.post("/api/Todos", json={"title": "missed"})
    headers = {"last-event-id": position}
    async with open_stream(
        client, STREAM, params={"options": '{"where":{"done":true}}'}, headers=headers
    ) as stream:
        await stream.read_until(lambda s: " ping" in s.parser.comments, timeout=5)
