"""Outbox benchmark: what the transactional outbox costs a write, and how soon a commit reaches the stream.

    .venv/bin/python loadtests/outbox_bench.py [--database-url URL] [--writes N] [--concurrency C]

One run prints:
- write throughput (rows/s) of C concurrent writers, each write in its own transaction, on the example Todo
  table: a plain write (validate, INSERT ... RETURNING, the row as JSON: everything a create does except
  the outbox) against `ModelWrites.create` (the same plus the change object and its outbox row), once with
  no relay running and once with the relay publishing to Redis alongside, as in production. Rounds
  alternate between the modes; the median round is reported. The overhead is the relay-on loss against
  the plain write.
- commit -> stream latency: one write every `--interval` seconds on an otherwise idle system, from the
  moment the write's transaction committed (the writes' post-commit callback) to the moment a separate
  Redis client's `XREAD BLOCK` returns the entry; p50/p90/p99/max.
- for scale (`--http N`, 0 to skip): the server CPU of a whole REST create (`POST /api/Todos` on a
  `gateway serve` process, outbox and relay included), and the outbox's share of it.

On a shared machine throughput swings with other people's load; the CPU this process spends per write is
the steadier figure, and the ratio the outbox adds to it is what to compare between runs.

`--database-url` names a PostgreSQL server (any database on it; default the local one): the benchmark
creates a database of its own there and drops it at the end. A `sqlite+aiosqlite://` URL uses a fresh file
in a temporary directory instead. Redis (`--redis-url`) is used under a key prefix of its own, removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
import uvloop
from sqlalchemy import delete, insert, text

from gateway.broker.base import Record
from gateway.broker.continuity import ZERO_OFFSET
from gateway.broker.factory import broker_from_url
from gateway.changes.outbox import outbox_table
from gateway.changes.relay import Relay, RelaySettings
from gateway.changes.writes import ModelWrites
from gateway.database import create_engine, create_tables, write_transaction
from gateway.models.loader import load_registry
from gateway.models.rows import to_json_row
from gateway.models.tables import build_tables
from gateway.models.validation import build_values
from gateway.ops.metrics import PrometheusMetrics

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"
STREAM = "Todo"
THROUGHPUT_TARGET = 25.0  # % of write throughput the outbox may cost
LATENCY_TARGET_MS = 20.0  # p99 commit -> stream


def body(i: int) -> dict[str, Any]:
    return {"title": f"benchmark write {i}", "done": i % 2 == 0, "priority": i % 7}


class Bench:
    def __init__(self, database_url: str, redis_url: str, concurrency: int) -> None:
        registry = load_registry(MODELS)
        tables = build_tables(registry)
        self.model = registry.by_name[STREAM]
        self.table = tables.table(self.model)
        self.outbox = outbox_table(tables.metadata)
        self.metadata = tables.metadata
        self.engine = create_engine(database_url)
        self.redis_url = redis_url
        self.prefix = f"outboxbench{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.broker = broker_from_url(redis_url, prefix=self.prefix, stream_maxlen=None)
        self.last_commit = 0.0
        self.relay: Relay | None = None
        self.writes = ModelWrites(self.model, self.table, self.outbox, self.engine, self._committed)

    async def _committed(self, stream: str, records: Sequence[Record] = ()) -> None:
        self.last_commit = time.perf_counter()
        if self.relay is not None:
            await self.relay.committed(stream, records)

    async def setup(self) -> None:
        await create_tables(self.engine, self.metadata)

    async def aclose(self) -> None:
        await self.stop_relay()
        await self.broker.aclose()
        await self.engine.dispose()
        client = aioredis.from_url(self.redis_url)
        keys = [key async for key in client.scan_iter(match=f"*{self.prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    async def start_relay(self) -> None:
        self.relay = Relay(
            engine=self.engine,
            outbox=self.outbox,
            broker=self.broker,
            streams=[STREAM],
            settings=RelaySettings(maintenance_interval=3600.0),
            metrics=PrometheusMetrics(),
        )
        self.relay.start()
        deadline = time.monotonic() + 15
        while STREAM not in self.relay.leases:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not get its lease (a stale lease of another run?)")
            await asyncio.sleep(0.01)

    async def stop_relay(self) -> None:
        if self.relay is not None:
            await self.relay.aclose()
            self.relay = None

    async def drain(self) -> None:
        """Wait until the relay has published everything, so the next phase starts from an idle system."""
        while True:
            async with self.engine.connect() as connection:
                left = await connection.scalar(
                    text(f"SELECT count(*) FROM {self.outbox.name} WHERE published_at IS NULL")
                )
            if not left:
                return
            await asyncio.sleep(0.05)

    async def forget_outbox(self) -> None:
        async with write_transaction(self.engine) as connection:
            await connection.execute(delete(self.outbox))

    # -- the two kinds of write --

    async def plain_write(self, i: int) -> None:
        values = build_values(self.model, body(i), allow_id=False)
        async with write_transaction(self.engine) as connection:
            result = await connection.execute(insert(self.table).values(**values).returning(*self.table.c))
            to_json_row(self.model, result.one()._mapping)

    async def outbox_write(self, i: int) -> None:
        await self.writes.create([body(i)])

    async def throughput(self, write: Callable[[int], Awaitable[None]], writes: int) -> float:
        """Rows per second of `concurrency` writers sharing `writes` writes."""
        counter = iter(range(writes))

        async def writer() -> None:
            for i in counter:
                await write(i)

        gc.collect()
        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(self.concurrency)))
        return writes / (time.perf_counter() - started)

    async def latency(self, writes: int, interval: float) -> list[float]:
        """Milliseconds from each write's commit to its entry being returned by XREAD BLOCK."""
        reader = broker_from_url(self.redis_url, prefix=self.prefix, stream_maxlen=None)
        head = await reader.head(STREAM)
        committed: dict[Any, float] = {}
        arrived: dict[Any, float] = {}
        done = asyncio.Event()

        async def read() -> None:
            after = head.last or ZERO_OFFSET
            while len(arrived) < writes:
                for entry in await reader.wait(STREAM, after, 100, timeout=1.0):
                    arrived[entry.outbox_id] = time.perf_counter()
                    after = entry.offset
            done.set()

        reading = asyncio.create_task(read())
        await asyncio.sleep(0.2)  # let the reader's first XREAD BLOCK reach Redis
        async with self.engine.connect() as connection:
            last_id = await connection.scalar(text(f"SELECT coalesce(max(id), 0) FROM {self.outbox.name}"))
        next_write = time.perf_counter()
        for i in range(writes):
            await self.outbox_write(i)
            committed[last_id + i + 1] = self.last_commit  # one writer: outbox ids follow one another
            next_write += interval
            await asyncio.sleep(max(0.0, next_write - time.perf_counter()))
        try:
            await asyncio.wait_for(done.wait(), 30)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            await reader.aclose()
        missing = set(committed) - set(arrived)
        if missing:
            raise RuntimeError(
                f"{len(missing)} writes never reached the stream (outbox ids {sorted(missing)[:5]})"
            )
        return [(arrived[i] - committed[i]) * 1000 for i in committed]


async def rest_creates(
    database_url: str, redis_url: str, writes: int, concurrency: int
) -> tuple[float, float]:
    """(creates/s, server CPU us per create) of `POST /api/Todos` on a `gateway serve` process using the
    bench's database and a Redis prefix of its own: what a whole REST write costs, outbox and relay included.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prefix = f"outboxbenchrest{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": prefix,
        "GATEWAY_MODELS": str(MODELS),
    }
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--log-level", "warning"]
    server = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline or server.returncode is not None:
                    raise RuntimeError(f"gateway serve did not become ready; try: {' '.join(command)}")
                await asyncio.sleep(0.05)

            async def post(count: int) -> None:
                counter = iter(range(count))

                async def writer() -> None:
                    for i in counter:
                        (await client.post("/api/Todos", json=body(i))).raise_for_status()

                await asyncio.gather(*(writer() for _ in range(concurrency)))

            await post(min(writes, 300))
            cpu, started = process_cpu(server.pid), time.perf_counter()
            await post(writes)
            elapsed = time.perf_counter() - started
            return writes / elapsed, (process_cpu(server.pid) - cpu) / writes * 1e6
    finally:
        server.kill()
        await server.wait()
        client_redis = aioredis.from_url(redis_url)
        keys = [key async for key in client_redis.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys:
            await client_redis.delete(*keys)
        await client_redis.aclose()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())  # other processes share the cores
    database_url, cleanup = await own_database(args.database_url)
    bench = Bench(database_url, args.redis_url, args.concurrency)
    try:
        await bench.setup()
        await bench.throughput(bench.plain_write, min(args.writes, 300))  # warm the pool and the caches
        await bench.throughput(bench.outbox_write, min(args.writes, 300))
        await bench.forget_outbox()
        results: dict[str, list[float]] = {"plain": [], "outbox": [], "outbox+relay": []}
        cpu: dict[str, list[float]] = {name: [] for name in results}  # this process, us per write

        async def measure(name: str, write: Callable[[int], Awaitable[None]], relay: bool = False) -> None:
            started = time.process_time()
            results[name].append(await bench.throughput(write, args.writes))
            if relay:
                await bench.drain()  # the relay's work for these writes counts too
            cpu[name].append((time.process_time() - started) / args.writes * 1e6)

        for _ in range(args.rounds):
            await measure("plain", bench.plain_write)
            await measure("outbox", bench.outbox_write)
            await bench.forget_outbox()
            await bench.start_relay()
            await measure("outbox+relay", bench.outbox_write, relay=True)
            await bench.stop_relay()
        await bench.start_relay()
        latencies = await bench.latency(args.latency_writes, args.interval)
        await bench.stop_relay()
        rest = None
        if args.http:
            rest = await rest_creates(database_url, args.redis_url, args.http, args.concurrency)
    finally:
        await bench.aclose()
        await cleanup()

    plain = statistics.median(results["plain"])
    print(f"outbox benchmark: {describe(args)}")
    print(f"load average before / after: {load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"write throughput, rows/s (median of {args.rounds} rounds; each round's figures in brackets)")
    plain_cpu = statistics.median(cpu["plain"])
    for name, label in (
        ("plain", "plain write (validate, INSERT RETURNING, commit)"),
        ("outbox", "ModelWrites.create + outbox, relay off"),
        ("outbox+relay", "ModelWrites.create + outbox, relay publishing"),
    ):
        rate, cpu_us = statistics.median(results[name]), statistics.median(cpu[name])
        cost = "" if name == "plain" else f" (cost {100 * (1 - rate / plain):4.1f}%)"
        cpu_cost = "" if name == "plain" else f" (+{100 * (cpu_us / plain_cpu - 1):.0f}%)"
        rounds = ", ".join(f"{r:.0f}" for r in results[name])
        print(
            f"  {label:<48} {rate:6.0f}{cost:<14} [{rounds}]; "
            f"this process's CPU {cpu_us:4.0f} us/write{cpu_cost}"
        )
    overhead = 100 * (1 - statistics.median(results["outbox+relay"]) / plain)
    verdict = "met" if overhead < THROUGHPUT_TARGET else "MISSED"
    print(
        f"outbox overhead: {overhead:.1f}% of write throughput (target < {THROUGHPUT_TARGET:.0f}%: {verdict})"
    )
    if rest is not None:
        rate, server_cpu = rest
        added = statistics.median(cpu["outbox+relay"]) - plain_cpu
        print(
            f"REST POST /api/Todos on gateway serve (outbox and relay included): {rate:.0f} creates/s, "
            f"server CPU {server_cpu:.0f} us/create; the outbox's {added:.0f} us are "
            f"{100 * added / server_cpu:.0f}% of it"
        )
    p50, p90, p99 = (percentile(latencies, p) for p in (50, 90, 99))
    verdict = "met" if p99 < LATENCY_TARGET_MS else "MISSED"
    print(
        f"commit -> stream latency, {len(latencies)} writes one every {args.interval * 1000:.0f} ms: "
        f"p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms, max {max(latencies):.2f} ms "
        f"(target p99 < {LATENCY_TARGET_MS:.0f} ms: {verdict})"
    )


def describe(args: argparse.Namespace) -> str:
    database = "SQLite" if args.database_url.startswith("sqlite") else "PostgreSQL"
    return (
        f"{database}, Redis {args.redis_url}, {args.writes} writes x {args.rounds} rounds per mode, "
        f"concurrency {args.concurrency}, Python {sys.version.split()[0]}, uvloop"
    )


async def own_database(url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh database on the server of `url`, and the coroutine function that drops it."""
    if url.startswith("sqlite"):
        directory = tempfile.TemporaryDirectory(prefix="outbox-bench-")

        async def remove_file() -> None:
            directory.cleanup()

        return f"sqlite+aiosqlite:///{directory.name}/bench.db", remove_file
    server = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"outbox_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    base = server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server to create a scratch database on, or sqlite+aiosqlite:// for a temp file",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--writes", type=int, default=3000, help="writes per mode and round")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent writers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-writes", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between latency writes")
    parser.add_argument(
        "--http",
        type=int,
        default=2000,
        metavar="N",
        help="also time N REST creates on a `gateway serve` process, for scale (0: skip)",
    )
    args = parser.parse_args()
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
