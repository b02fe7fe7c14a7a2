"""The multiplexed stream (`/api/change-stream?models=...`) over real HTTP: in-process for the wire format and
the errors, and across two gateway processes on PostgreSQL and Redis for resume."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.broker.factory import broker_from_url
from gateway.config import Settings
from gateway.sse.combined import CombinedPosition, relabel
from tests.conftest import EXAMPLE_MODELS
from tests.polling import eventually
from tests.sse.helpers import OpenStream, open_stream, serve
from tests.sse.test_cluster import Cluster, cluster, stalled_socket  # noqa: F401  (the fixtures)

MODELS = ("Todo", "Color", "Shape")
PLURALS = {"Todo": "Todos", "Color": "Colors", "Shape": "Shapes"}


def write_models(directory: Path) -> Path:
    """The example Todo plus two more models, in a directory of LoopBack model JSON files."""
    directory.mkdir()
    (directory / "todo.json").write_text((EXAMPLE_MODELS / "todo.json").read_text())
    for name in ("Color", "Shape"):
        definition = {"name": name, "base": "PersistedModel", "properties": {"name": {"type": "string"}}}
        (directory / f"{name.lower()}.json").write_text(json.dumps(definition))
    return directory


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp]]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        models=write_models(tmp_path / "models"),
        drain_seconds=0.1,
    )
    async with serve(settings) as (url, app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, app


def part_of(event_id: str, model: str) -> str:
    return CombinedPosition(MODELS, event_id).positions[model]


def test_relabel_adds_the_model_and_combines_ids() -> None:
    position = CombinedPosition(["Todo", "Color"], None)
    assert (
        relabel("Color", b"retry: 3000\n:ok\n\nid: aaaaaaaa-0-0\n\n", position)
        == b"id: Color:aaaaaaaa-0-0\n\n"
    )
    frame = b'id: bbbbbbbb-5-0\nevent: data\ndata: {"target":1,"type":"create"}\n\n: ping\n\n'
    assert relabel("Todo", frame, position) == (
        b'id: Todo:bbbbbbbb-5-0,Color:aaaaaaaa-0-0\nevent: data\ndata: {"model":"Todo","target":1,'
        b'"type":"create"}\n\n: ping\n\n'
    )
    assert (
        relabel("Todo", b"event: error\ndata: {}\n\n", position)
        == b'event: error\ndata: {"model":"Todo"}\n\n'
    )


def test_a_model_missing_from_the_id_sent_back_is_reset_not_resumed_from_its_head() -> None:
    position = CombinedPosition(["Todo", "Color"], "Todo:aaaaaaaa-1-0,Bogus:x")
    assert position.resume_for("Todo", snapshot=False) == "aaaaaaaa-1-0"
    assert position.resume_for("Color", snapshot=False) == "unknown"
    assert position.resume_for("Color", snapshot=True) is None  # how a client re-lists one model
    assert position.resume_for("Todo", snapshot=True) == "aaaaaaaa-1-0"
    assert CombinedPosition(["Todo"], None).resume_for("Todo", snapshot=False) is None


async def test_one_connection_carries_each_model_with_its_own_options(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, app = gateway
    head = (await client.get("/api/Todos")).headers["x-change-stream-position"]
    await client.post("/api/Todos", json={"title": "old", "done": False})

    async def published() -> bool:  # else its change may follow the snapshot too (that overlap is allowed)
        return (await client.get("/api/Todos")).headers["x-change-stream-position"] != head

    await eventually(published, what="the write before the snapshot is published")
    options = json.dumps({"where": {"done": False}, "fields": ["id", "title"]})
    path = f"/api/change-stream?models=Todo,Color&snapshot=true&options[Todo]={options}"
    async with open_stream(client, path) as stream:
        await stream.read_until(lambda s: sum(e.event == "snapshot-end" for e in s.events) == 2)
        assert app.gateway.hub.count == 2
        await client.post("/api/Todos", json={"title": "hidden", "done": True})
        await client.post("/api/Colors", json={"name": "red"})
        await client.post("/api/Todos", json={"title": "shown"})
        await stream.read_until(lambda s: len(s.data_events) >= 3)
    assert stream.changes() == [
        {"model": "Todo", "target": 1, "data": {"title": "old", "id": 1}, "type": "create"},
        {"model": "Color", "target": 1, "data": {"name": "red", "id": 1}, "type": "create"},
        {"model": "Todo", "target": 3, "data": {"title": "shown", "id": 3}, "type": "create"},
    ]
    ends = [json.loads(e.data) for e in stream.events if e.event == "snapshot-end"]
    assert [end["model"] for end in ends] == ["Todo", "Color"]
    last = CombinedPosition(["Todo", "Color"], stream.parser.last_event_id)
    assert set(last.positions) == {"Todo", "Color"}
    assert len(stream.parser.last_event_id) < 100

    async def unregistered() -> bool:
        return app.gateway.hub.count == 0

    await eventually(unregistered, what="both models' streams end with the connection")


async def test_reset_names_the_model_to_relist(gateway: tuple[httpx.AsyncClient, GatewayApp]) -> None:
    client, _ = gateway
    async with open_stream(client, "/api/change-stream?models=Todo,Color") as first:
        await first.read_until(lambda s: s.parser.last_event_id != "")
        todo = CombinedPosition(["Todo", "Color"], first.parser.last_event_id).positions["Todo"]
    headers = {"Last-Event-ID": f"Todo:{todo},Color:garbage"}
    async with open_stream(client, "/api/change-stream?models=Todo,Color", headers=headers) as stream:
        await stream.read_until(lambda s: len(s.events) >= 1)
    reset = stream.events[0]
    assert reset.event == "reset"
    assert json.loads(reset.data)["model"] == "Color"
    assert json.loads(reset.data)["reason"] == "history-expired"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?models=",
        "?models=Todo,Nope",
        "?models=Todo,Todo",
        '?models=Todo&options[Color]={"where":{}}',
        '?models=Todo&options[Todo]={"where":{"nope":1}}',
        "?models=Todo&options[Todo]=3",
    ],
)
async def test_bad_requests_are_400s_and_leave_nothing_registered(
    gateway: tuple[httpx.AsyncClient, GatewayApp], query: str
) -> None:
    client, app = gateway
    response = await client.get(f"/api/change-stream{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["statusCode"] == 400
    assert app.gateway.hub.count == 0


async def test_resume_across_two_workers_under_writes_to_three_models(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Hop between two processes with Last-Event-ID while writes to three models go through both: per
    model, the changes received are exactly the broker's entries, in order, none lost, none twice."""
    a, b = cluster(2, models=write_models(tmp_path / "models"))
    rng = random.Random(15)
    writes = 450
    path = "/api/change-stream?models=" + ",".join(MODELS)
    async with httpx.AsyncClient(timeout=20) as http:
        done_writing = asyncio.Event()

        async def writer() -> None:
            for n in range(writes):
                target = (a, b)[n % 2]
                plural = PLURALS[rng.choice(MODELS)]
                if n % 5 == 4:
                    response = await http.patch(
                        f"{target.url}/api/{plural}/{rng.randint(1, n // 3 + 1)}", json={}
                    )
                    assert response.status_code in (200, 404)
                    continue
                body = {"title": f"w{n}"} if plural == "Todos" else {"name": f"w{n}"}
                assert (await http.post(f"{target.url}/api/{plural}", json=body)).status_code == 200
            done_writing.set()

        async with open_stream(http, f"{a.url}{path}") as first:
            await first.read_until(lambda s: s.parser.last_event_id != "")
            origin = first.parser.last_event_id
        writing = asyncio.create_task(writer())
        received: list[tuple[str, str]] = []
        last_id = origin
        hop = 0
        while not (done_writing.is_set() and hop % 2 == 0 and hop > 40):
            server = (b, a)[hop % 2]
            wanted = rng.randint(1, 8)
            async with open_stream(http, f"{server.url}{path}", headers={"last-event-id": last_id}) as part:
                await part.read_until(
                    lambda s, n=wanted: len(s.data_events) >= n or done_writing.is_set(), 20
                )
                for event in part.data_events:
                    model = json.loads(event.data)["model"]
                    received.append((model, part_of(event.last_event_id, model)))
                last_id = part.parser.last_event_id or last_id  # a hop that read nothing keeps it
            hop += 1
        await writing
    assert len(received) > writes // 2  # most arrived while hopping, not in the tail read
    broker = broker_from_url(redis_url, prefix=redis_prefix)
    try:
        start = CombinedPosition(MODELS, origin)
        total = 0
        for model in MODELS:
            offset = start.positions[model].split("-", 1)[1]
            entries = await broker.read(model, offset, 100_000)
            expected = [f"{e.epoch}-{e.offset}" for e in entries]
            total += len(expected)
            got = [position for name, position in received if name == model]
            missing = len(expected) - len(got)
            if missing > 0:  # the tail not read yet: read it on the last worker
                got += await read_tail(f"{a.url}{path}", last_id, model, missing)
            assert got == expected, model
        assert total >= writes * 4 // 5
    finally:
        await broker.aclose()


async def read_tail(url: str, last_id: str, model: str, count: int) -> list[str]:
    """The positions of `model`'s next `count` changes after `last_id`."""

    def positions(stream: OpenStream) -> list[str]:
        return [
            part_of(e.last_event_id, model)
            for e in stream.data_events
            if json.loads(e.data)["model"] == model
        ]

    async with (
        httpx.AsyncClient(timeout=20) as http,
        open_stream(http, url, headers={"last-event-id": last_id}) as rest,
    ):
        await rest.read_until(lambda s: len(positions(s)) >= count, 20)
        return positions(rest)


async def test_leaving_a_model_out_of_the_id_re_lists_it_by_snapshot(
    gateway: tuple[httpx.AsyncClient, GatewayApp],
) -> None:
    client, _ = gateway
    await client.post("/api/Colors", json={"name": "red"})
    path = "/api/change-stream?models=Todo,Color&snapshot=true"
    async with open_stream(client, path) as first:
        await first.read_until(lambda s: sum(e.event == "snapshot-end" for e in s.events) == 2)
        todo = CombinedPosition(["Todo", "Color"], first.parser.last_event_id).positions["Todo"]
    created = (await client.post("/api/Todos", json={"title": "while away"})).json()
    async with open_stream(client, path, headers={"Last-Event-ID": f"Todo:{todo}"}) as stream:
        await stream.read_until(
            lambda s: len(s.data_events) >= 2 and any(e.event == "snapshot-end" for e in s.events)
        )
    assert [json.loads(e.data)["model"] for e in stream.events if e.event == "snapshot-end"] == ["Color"]
    assert sorted(stream.changes(), key=lambda c: c["model"]) == [
        {"model": "Color", "target": 1, "data": {"name": "red", "id": 1}, "type": "create"},
        {"model": "Todo", "target": created["id"], "data": created, "type": "create"},
    ]


async def test_a_stalled_multiplexed_client_is_cut_off_and_the_others_get_everything(
    cluster: Cluster,  # noqa: F811
    stalled_socket: Callable[[int, str], socket.socket],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A multiplexed client that never reads stalls past its models' own bound, is cut off cleanly (no
    error logged) once its socket has accepted nothing for the write timeout, while clients that read get
    every change."""
    (gateway,) = cluster(
        1, subscriber_max_bytes=262144, write_timeout=2, models=write_models(tmp_path / "models")
    )
    path = "/api/change-stream?models=Todo,Color"
    stalled_socket(gateway.port, path)
    cut_off = 'gateway_slow_subscriber_cutoffs_total{model="Todo",reason="write-timeout"} 1.0'
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        ready = asyncio.Semaphore(0)
        received: list[list[str]] = []

        async def reader() -> None:
            titles: list[str] = []
            received.append(titles)
            async with open_stream(http, path) as stream:
                await stream.read_until(lambda s: s.parser.last_event_id != "")
                ready.release()
                while True:
                    await stream.read_until(lambda s: len(s.events) > 0, 60)
                    for event in stream.events:
                        title = json.loads(event.data)["data"]["title"][:8]
                        if title == "stop----":
                            return
                        titles.append(title)
                    stream.events.clear()

        tasks = [asyncio.create_task(reader()) for _ in range(10)]
        for _ in range(10):
            await ready.acquire()
        writes = 0
        while writes < 2000:
            assert (
                await http.post("/api/Todos", json={"title": f"{writes:08d}" + "x" * 16_000})
            ).status_code == 200
            writes += 1
            if writes % 25 == 0 and cut_off in (await http.get("/metrics")).text:
                break
        await http.post("/api/Todos", json={"title": "stop----"})
        await asyncio.gather(*tasks)
        metrics = (await http.get("/metrics")).text
    assert cut_off in metrics, f"the stalled client was not cut off after {writes} events of 16 kB"
    assert all(titles == [f"{n:08d}" for n in range(writes)] for titles in received)
    assert "Exception in ASGI application" not in (tmp_path / "gateway-0.log").read_text()
