"""The in-process API (`gateway.streams`): a separate reader of the broker that a real gateway writes to.

Each test runs `gateway serve` in a subprocess on Redis (the shared one under the test's prefix, or a private
redis-server it restarts) and writes over HTTP; the stream under test reads the same Redis from this
process, as a worker that serves no HTTP would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.broker.base import BrokerError, Record
from gateway.broker.continuity import Position
from gateway.broker.memory import MemoryBroker
from gateway.config import Settings
from gateway.filters import FilterError
from gateway.models.loader import load_registry
from gateway.streams import (
    Change,
    LocalChangeStreams,
    Reset,
    StreamError,
    UnknownModelError,
    open_change_stream,
)
from tests.client import Writer, changes_of, eventually, patch, post, resets_of, take
from tests.client.conftest import BrokerFactory, GatewayFactory
from tests.conftest import EXAMPLE_MODELS
from tests.redis_server import RedisServers

STREAM = "Todo"


def settings(redis_url: str, prefix: str) -> Settings:
    return Settings(broker_url=redis_url, redis_prefix=prefix, models=EXAMPLE_MODELS)


async def test_changes_filters_positions_and_resume(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    async with (
        LocalChangeStreams.from_settings(settings(redis_url, redis_prefix)) as streams,
        streams.open("Todo") as everything,
        streams.open("Todos", where={"done": False}, fields=["title"]) as undone,
        httpx.AsyncClient(base_url=gateway.url) as client,
    ):
        a = await post(client, "/api/Todos", {"title": "a"})
        b = await post(client, "/api/Todos", {"title": "b", "done": True})
        b2 = await patch(client, f"/api/Todos/{b['id']}", {"done": False})  # enters the filter
        a2 = await patch(client, f"/api/Todos/{a['id']}", {"done": True})  # leaves it
        assert (await client.delete(f"/api/Todos/{b['id']}")).json() == {"count": 1}

        items = await take(everything, 5)
        assert changes_of(items) == [
            {"target": a["id"], "data": a, "type": "create"},
            {"target": b["id"], "data": b, "type": "create"},
            {"target": b["id"], "data": b2, "type": "update"},
            {"target": a["id"], "data": a2, "type": "update"},
            {"target": b["id"], "where": {"id": b["id"]}, "type": "remove"},
        ]
        assert changes_of(await take(undone, 4)) == [
            {"target": a["id"], "data": {"title": "a"}, "type": "create"},
            {"target": b["id"], "data": {"title": "b"}, "type": "create"},
            {"target": a["id"], "where": {"id": a["id"]}, "type": "remove"},
            {"target": b["id"], "where": {"id": b["id"]}, "type": "remove"},
        ]
        positions = [item.position for item in items]
        assert everything.position == positions[-1]
        parsed = [Position.parse(position) for position in positions]
        assert len({p.epoch for p in parsed}) == 1
        assert [p.offset for p in parsed] == sorted({p.offset for p in parsed}, key=_offset_key)

        # Resuming from any position continues right after it; "earliest" replays everything retained.
        async with streams.open("Todo", start=positions[1]) as resumed:
            assert await take(resumed, 3) == items[2:]
        async with streams.open("Todo", start="earliest") as earliest:
            assert await take(earliest, 5) == items
        # A position of a lost history: told so, then everything of the current one (all after the loss).
        epoch = parsed[0].epoch
        stale = ("zzzzzzzz" if epoch != "zzzzzzzz" else "yyyyyyyy") + "-1-0"
        async with streams.open("Todo", start=stale) as lost:
            assert await take(lost, 5) == [Reset("epoch-changed", f"{epoch}-0-0"), *items]
        # ... and then follows live.
        async with streams.open("Todo", start=positions[-1]) as live:
            c = await post(client, "/api/Todos", {"title": "c"})
            assert changes_of(await take(live, 1)) == [{"target": c["id"], "data": c, "type": "create"}]


def _offset_key(offset: str) -> tuple[int, int]:
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq)


async def test_resuming_from_a_trimmed_position_is_a_history_expired_reset(
    gateways: GatewayFactory, brokers: BrokerFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(
        redis_url=redis_url, prefix=redis_prefix, GATEWAY_STREAM_MAXLEN="100", GATEWAY_RELAY_BATCH="50"
    )
    broker = brokers(redis_url, prefix=redis_prefix)
    async with (
        LocalChangeStreams.from_settings(settings(redis_url, redis_prefix)) as streams,
        streams.open("Todo") as live,
        httpx.AsyncClient(base_url=gateway.url, timeout=30.0) as client,
    ):
        await post(client, "/api/Todos", {"title": "old"})
        [old] = await take(live, 1)
        for batch in range(4):
            rows = await post(client, "/api/Todos", [{"title": f"t{batch}-{i}"} for i in range(100)])
        last_id = rows[-1]["id"]

        async def published_and_trimmed() -> bool:
            # (A live stream may itself be trimmed past while it lags, so ask the broker, not `live`.)
            [newest] = await broker.tail(STREAM, 1)
            head = await broker.head(STREAM)
            old_offset = Position.parse(old.position).offset
            assert head.first is not None
            return json.loads(newest.change)["target"] == last_id and _offset_key(head.first) > _offset_key(
                old_offset
            )

        await eventually(published_and_trimmed, what="every write published, and the old position trimmed")
        [oldest] = await broker.read(STREAM, "0-0", 1)

        async with streams.open("Todo", start=old.position) as resumed:
            first = await anext(resumed)
            assert first == Reset("history-expired", f"{oldest.epoch}-{oldest.prev}")
            first_retained = Change(f"{oldest.epoch}-{oldest.offset}", json.loads(oldest.change))
            assert await take(resumed, 1) == [first_retained]
            rest = changes_of(await take(resumed, last_id - first_retained.target))
            assert [change["target"] for change in rest] == list(
                range(first_retained.target + 1, last_id + 1)
            )
            assert resumed.position == f"{oldest.epoch}-{(await broker.head(STREAM)).last}"

        # "earliest" starts at the oldest retained entry: no reset, since nothing before it was asked for.
        async with streams.open("Todo", start="earliest") as earliest:
            assert await anext(earliest) == Change(
                f"{oldest.epoch}-{oldest.offset}", json.loads(oldest.change)
            )


async def test_a_redis_that_lost_its_data_is_an_epoch_changed_reset_then_the_stream_continues(
    gateways: GatewayFactory, brokers: BrokerFactory, redis_servers: RedisServers
) -> None:
    server = redis_servers.start()
    gateway = await gateways(redis_url=server.url, prefix="gw")
    broker = brokers(server.url, prefix="gw")
    async with (
        LocalChangeStreams.from_settings(settings(server.url, "gw")) as streams,
        open_change_stream(broker, streams.registry.by_name["Todo"]) as stream,
        httpx.AsyncClient(base_url=gateway.url) as client,
    ):
        a = await post(client, "/api/Todos", {"title": "a"})
        [before] = await take(stream, 1)
        assert isinstance(before, Change)
        assert before.target == a["id"]

        await asyncio.to_thread(server.restart)  # comes back empty: a new epoch
        b = await post(client, "/api/Todos", {"title": "b"})  # the outbox keeps it until Redis is back

        items = await take(stream, 1, within=30.0)
        assert [type(item) for item in items] == [Reset, Change]
        reset, after = items
        assert isinstance(reset, Reset)
        assert isinstance(after, Change)
        assert reset.reason == "epoch-changed"
        new_epoch = Position.parse(reset.position).epoch
        assert new_epoch != Position.parse(before.position).epoch
        assert after.change == {"target": b["id"], "data": b, "type": "create"}
        assert Position.parse(after.position).epoch == new_epoch

        c = await post(client, "/api/Todos", {"title": "c"})
        assert changes_of(await take(stream, 1)) == [{"target": c["id"], "data": c, "type": "create"}]


async def test_no_gap_and_no_duplicate_across_broker_reconnects(
    gateways: GatewayFactory,
    brokers: BrokerFactory,
    redis_servers: RedisServers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The data survives (append-only file), the connections do not: killed, then Redis down a while."""
    server = redis_servers.start(args=["--appendonly", "yes", "--appendfsync", "always"])
    gateway = await gateways(redis_url=server.url, prefix="gw")
    broker = brokers(server.url, prefix="gw")
    async with (
        LocalChangeStreams.from_settings(settings(server.url, "gw")) as streams,
        open_change_stream(broker, streams.registry.by_name["Todo"]) as stream,
    ):
        received: list[Change | Reset] = []

        async def read() -> None:
            async for item in stream:
                received.append(item)

        reader = asyncio.create_task(read())
        try:
            async with Writer(gateway.url) as writer:
                await writer.wait_for(20)
                raw = aioredis.from_url(server.url)
                try:
                    killed = await raw.client_kill_filter(_type="normal", skipme=True)
                finally:
                    await raw.aclose()
                assert killed >= 1
                await writer.wait_for(20)
                # Down for longer than redis-py's own retries: the stream sees the outage, backs off,
                # and resumes from its cursor once Redis is back (writes meanwhile wait in the outbox).
                await asyncio.to_thread(server.stop)

                async def noticed() -> bool:
                    return any("cannot read" in record.message for record in caplog.records)

                await eventually(noticed, what="the stream noticing the outage")
                await asyncio.to_thread(server.start)
                await writer.wait_for(20)
            written = await _all_ids(gateway.url)
            assert set(writer.acked) <= set(written)

            async def all_received() -> bool:
                return len(received) >= len(written)

            await eventually(all_received, within=30.0, what="every write reaching the stream")
        finally:
            await stream.aclose()
            await reader
        assert not resets_of(received)
        assert [change["target"] for change in changes_of(received)] == written


async def _all_ids(url: str) -> list[int]:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/api/Todos", params={"filter": json.dumps({"order": "id ASC"})})
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()]


async def test_a_stream_that_falls_behind_trimming_is_told_and_goes_on_from_what_is_left() -> None:
    broker = MemoryBroker(stream_maxlen=10)  # exact trimming
    async with broker, LocalChangeStreams(broker, load_registry(EXAMPLE_MODELS)).open("Todo") as stream:
        lease = await broker.acquire_lease(STREAM, "test", 30.0)
        assert lease is not None

        def created(n: int) -> Record:
            change = {"target": n, "data": {"title": f"t{n}", "done": False, "id": n}, "type": "create"}
            return Record(outbox_id=n, change=json.dumps(change).encode(), before=None, committed_at=0.0)

        await broker.append(STREAM, [created(1)], lease=lease)
        [first] = await take(stream, 1)
        await broker.append(STREAM, [created(n) for n in range(2, 31)], lease=lease)  # 2..20 are trimmed
        items = await take(stream, 10)
        retained = await broker.read(STREAM, "0-0", 100)
        assert [entry.outbox_id for entry in retained] == list(range(21, 31))
        epoch = retained[0].epoch
        assert items[0] == Reset("history-expired", f"{epoch}-{retained[0].prev}")
        assert [item.position for item in items[1:]] == [f"{epoch}-{entry.offset}" for entry in retained]
        assert [change["target"] for change in changes_of(items)] == list(range(21, 31))
        assert stream.position == items[-1].position != first.position


async def test_inside_the_serving_process_with_the_embedded_broker(tmp_path: Path) -> None:
    """The docs' startup-hook use: the app's own broker, which is the only way to see `memory://`."""
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", models=EXAMPLE_MODELS))
    async with (
        app.router.lifespan_context(app),
        open_change_stream(app.gateway.broker, app.gateway.registry.by_name["Todo"]) as stream,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client,
    ):
        a = await post(client, "/api/Todos", {"title": "a"})
        assert changes_of(await take(stream, 1)) == [{"target": a["id"], "data": a, "type": "create"}]


async def test_close_from_another_task_ends_a_pending_read_at_once(
    brokers: BrokerFactory, redis_url: str, redis_prefix: str
) -> None:
    async with LocalChangeStreams.from_settings(settings(redis_url, redis_prefix)) as streams:
        stream = streams.open("Todo")
        await stream.open()
        pending = asyncio.create_task(anext(stream))
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 1.0)
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_bad_requests_fail_when_the_stream_is_made(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with pytest.raises(StreamError, match="memory:// broker lives inside the serving process"):
        LocalChangeStreams.from_settings(Settings(models=EXAMPLE_MODELS))
    async with LocalChangeStreams.from_settings(settings(redis_url, redis_prefix)) as streams:
        with pytest.raises(UnknownModelError, match=r"no model 'Nope'; the models are: Todo \(Todos\)"):
            streams.open("Nope")
        with pytest.raises(FilterError):
            streams.open("Todo", where={"nope": 1})
        with pytest.raises(ValueError, match="not a stream position"):
            streams.open("Todo", start="yesterday")
        stream = streams.open("Todo")
        with pytest.raises(RuntimeError, match="open the stream first"):
            await anext(stream)
    unreachable = settings("redis://127.0.0.1:1/0", redis_prefix)
    async with LocalChangeStreams.from_settings(unreachable) as streams:
        with pytest.raises(BrokerError, match=r"127\.0\.0\.1:1\b"):
            await streams.open("Todo").open()
