"""What a REST create costs the worker, layer by layer, in CPU (time.process_time, every thread of the process).

A sampling profiler over a busy box charges a thread the time it was preempted (py-spy put 39 % of a write-
only profile in `sem_post`, the wake-up of aiosqlite's thread, but cutting those wake-ups from 12 to 5 per
POST saved ~5 %): this measures instead. One process, one event loop (uvloop), the gateway's own app on
SQLite or PostgreSQL with the memory broker, N sequential operations per layer, alternated over rounds:

- `transaction`: an empty write transaction (BEGIN IMMEDIATE / BEGIN, COMMIT);
- `create`: `ModelWrites.create` of one Todo: the row, its outbox row, the relay woken;
- `post`: `POST /api/Todos` through the whole ASGI app (middleware, routing, validation, JSON) by httpx's
  ASGI transport, the relay publishing in the background;
- `readyz`: `GET /readyz` by the same transport: what the client and the ASGI plumbing cost on their own.

So `post - readyz` is what the server spends on a create, and `create - transaction` the statements.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop

from gateway.app import create_app
from gateway.config import Settings
from gateway.database import write_transaction
from loadtests.gatewayproc import DEFAULT_MODELS, POSTGRES_ADMIN, _postgres


async def _cpu_per_call(operation: Callable[[], Awaitable[object]], count: int) -> float:
    """Microseconds of process CPU per call of `operation`, called `count` times in sequence."""
    start = time.process_time()
    for _ in range(count):
        await operation()
    return (time.process_time() - start) / count * 1e6


async def measure(database_url: str, count: int, rounds: int) -> dict[str, list[float]]:
    app = create_app(Settings(database_url=database_url, models=DEFAULT_MODELS, broker_url="memory://"))
    figures: dict[str, list[float]] = {"transaction": [], "create": [], "post": [], "readyz": []}
    async with app.router.lifespan_context(app):
        gateway = app.gateway
        writes = gateway.apis["Todo"].writes
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.bench") as client:

            async def transaction() -> None:
                async with write_transaction(gateway.engine):
                    pass

            async def create() -> None:
                await writes.create([{"title": "bench"}])

            async def post() -> None:
                reply = await client.post("/api/Todos", json={"title": "bench"})
                assert reply.status_code == 200, reply.text

            async def readyz() -> None:
                await client.get("/readyz")

            layers = {"transaction": transaction, "create": create, "post": post, "readyz": readyz}
            for operation in layers.values():  # warm every path up
                await _cpu_per_call(operation, 50)
            for _ in range(rounds):
                for name, operation in layers.items():
                    figures[name].append(await _cpu_per_call(operation, count))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("-n", "--count", type=int, default=500, help="operations per layer and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gw-write-cost-") as workdir:
        if args.database == "postgres":
            name = f"gwbench_cost_{int(time.time())}"
            _postgres(f'CREATE DATABASE "{name}"')
            url = (
                POSTGRES_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
                + f"/{name}"
            )
        else:
            url = f"sqlite+aiosqlite:///{Path(workdir) / 'gateway.db'}"
        try:
            figures = uvloop.run(measure(url, args.count, args.rounds))
        finally:
            if args.database == "postgres":
                _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"{args.database}, {args.count} sequential calls x {args.rounds} rounds, CPU µs per call (median, range):"
    )
    for layer, values in figures.items():
        print(f"  {layer:12} {statistics.median(values):8.0f}   ({min(values):.0f}-{max(values):.0f})")
    median = {layer: statistics.median(values) for layer, values in figures.items()}
    print(f"  post - readyz (the server's share of a create): {median['post'] - median['readyz']:.0f} µs")
    print(
        f"  create - transaction (the statements):          {median['create'] - median['transaction']:.0f} µs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
