"""The change pipeline across processes (DESIGN §3, invariants 1, 3 and 4): real `gateway serve` processes
sharing PostgreSQL and Redis, writers in processes of their own, and a relay leader that dies mid-flight."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

from gateway.broker.base import Entry
from tests.changes.conftest import (
    DEADLINE,
    GatewayFactory,
    RedisBrokerFactory,
    StoreFactory,
    assert_once_each,
    before_of,
    change_of,
    eventually,
    stream_entries,
)
from tests.conftest import DatabaseFactory
from tests.server import ROOT, GatewayProcess

WRITER = """
import json, pathlib, sys, time
import httpx

urls, targets, writer, count, directory = json.loads(sys.argv[1])
directory = pathlib.Path(directory)
(directory / f"ready-{writer}").touch()
while not (directory / "go").exists():
    time.sleep(0.005)
with httpx.Client(timeout=30) as client:
    for i in range(count):
        target = targets[(i + writer) % len(targets)]
        url = urls[(i + writer) % len(urls)]
        values = {"title": f"w{writer}-{i}", "priority": writer * 1000 + i}
        if i % 3 == 2:
            where = json.dumps({"id": target})
            response = client.post(f"{url}/api/Todos/update", params={"where": where}, json=values)
        else:
            response = client.patch(f"{url}/api/Todos/{target}", json=values)
        response.raise_for_status()
"""


def gateway_env(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_LEASE_TTL": "1",
        "GATEWAY_RELAY_POLL_INTERVAL": "0.5",
    }


async def test_concurrent_writers_of_one_row_are_streamed_in_commit_order(
    postgres_database: DatabaseFactory,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    redis_url: str,
    redis_prefix: str,
    gateway_processes: GatewayFactory,
    tmp_path: Path,
) -> None:
    """Three writer processes patch the same three rows through two gateways at once. For every row, the
    stream must tell one consistent story: each update's `before` is the previous change's `data`, the last
    `data` is the row in the database, and each writer's own updates keep the order it made them in."""
    database_url = await postgres_database()
    env = gateway_env(database_url, redis_url, redis_prefix)
    gateways = [gateway_processes(env), gateway_processes(env)]
    async with httpx.AsyncClient(base_url=gateways[0].url) as client:
        created = await client.post("/api/Todos", json=[{"title": f"row {i}"} for i in range(3)])
        assert created.status_code == 200
        targets = [row["id"] for row in created.json()]

        writers, per_writer = 3, 30
        arguments = [[gateway.url for gateway in gateways], targets, 0, per_writer, str(tmp_path)]
        processes = []
        for writer in range(writers):
            arguments[2] = writer
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-c", WRITER, json.dumps(arguments), env=dict(os.environ), cwd=ROOT
                )
            )
        try:

            async def ready() -> bool:
                return all((tmp_path / f"ready-{writer}").exists() for writer in range(writers))

            await eventually(ready, what="every writer process is ready")
            (tmp_path / "go").touch()
            async with asyncio.timeout(60):
                codes = [await process.wait() for process in processes]
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert codes == [0] * writers

        store = await make_store(database_url)
        await eventually(store.all_published, what="every change is published")
        broker = make_redis_broker()
        entries = await stream_entries(broker)
        assert_once_each(entries, [row.id for row in await store.outbox_rows()], in_order=False)
        assert len(entries) == len(targets) + writers * per_writer

        by_target: dict[int, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_target[change_of(entry)["target"]].append(entry)
        assert sorted(by_target) == sorted(targets)
        for target, story in by_target.items():
            changes = [change_of(entry) for entry in story]
            assert [c["type"] for c in changes] == ["create"] + ["update"] * (len(story) - 1)
            for previous, entry in itertools.pairwise(story):
                assert before_of(entry) == change_of(previous)["data"], f"row {target} jumped"
            assert [e.outbox_id for e in story] == sorted(e.outbox_id for e in story)
            row = (await client.get(f"/api/Todos/{target}")).json()
            assert changes[-1]["data"] == row
            for writer in range(writers):
                own = [
                    c["data"]["priority"] for c in changes[1:] if c["data"]["title"].startswith(f"w{writer}-")
                ]
                assert own == sorted(own), f"writer {writer}'s updates of row {target} out of order"


async def leases_held(gateway: GatewayProcess) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{gateway.url}/metrics", timeout=5)
    match = re.search(r"^gateway_relay_leases (\S+)$", response.text, re.MULTILINE)
    assert match is not None, response.text[:500]
    return int(float(match.group(1)))


async def leader_of(gateways: list[GatewayProcess]) -> tuple[GatewayProcess, GatewayProcess]:
    """(leader, follower) once exactly one of the two holds the stream's lease."""

    async def one_leader() -> tuple[GatewayProcess, GatewayProcess] | None:
        held = [await leases_held(gateway) for gateway in gateways]
        if sorted(held) != [0, 1]:
            return None
        return (gateways[0], gateways[1]) if held[0] else (gateways[1], gateways[0])

    return await eventually(one_leader, what="one gateway holds the lease")


async def test_when_the_relay_leader_dies_the_other_gateway_publishes_everything(
    postgres_database: DatabaseFactory,
    make_store: StoreFactory,
    make_redis_broker: RedisBrokerFactory,
    redis_url: str,
    redis_prefix: str,
    gateway_processes: GatewayFactory,
) -> None:
    """Writes go on through the follower while the leader is SIGKILLed (twice, each time at a random point of
    its relaying); the survivor takes the lease within a few seconds, and every change is published once."""
    database_url = await postgres_database()
    env = gateway_env(database_url, redis_url, redis_prefix)
    gateways = [gateway_processes(env), gateway_processes(env)]
    store = await make_store(database_url)
    broker = make_redis_broker()
    created: list[int] = []

    async def write(gateway: GatewayProcess, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            while not stop.is_set():
                response = await client.post("/api/Todos", json=[{"title": "a"}, {"title": "b"}])
                assert response.status_code == 200, response.text
                created.extend(row["id"] for row in response.json())

    for _round in range(2):
        leader, follower = await leader_of(gateways)
        stop = asyncio.Event()
        writer = asyncio.create_task(write(follower, stop))
        try:
            published_before = len(await stream_entries(broker))

            async def flowing(base: int = published_before) -> bool:
                return len(await stream_entries(broker)) >= base + 20

            await eventually(flowing, what="the leader publishes the follower's writes")
            leader.kill()
            killed_at = time.monotonic()

            async def took_over(survivor: GatewayProcess = follower) -> bool:
                return await leases_held(survivor) == 1

            await eventually(took_over, timeout=DEADLINE, interval=0.05, what="the follower takes the lease")
            takeover = time.monotonic() - killed_at
            assert takeover < 6.0, f"the takeover took {takeover:.1f}s with a 1 s lease"
            count = len(created)

            async def more_writes(base: int = count) -> bool:
                return len(created) >= base + 20

            await eventually(more_writes, what="writes go on after the takeover")
        finally:
            stop.set()
            await writer
        gateways = [follower, leader.start()]  # the dead one comes back, as a follower

    await eventually(store.all_published, what="the backlog is published")
    entries = await stream_entries(broker)
    assert_once_each(entries, [row.id for row in await store.outbox_rows()], in_order=False)
    assert sorted(change_of(entry)["target"] for entry in entries) == sorted(created)
