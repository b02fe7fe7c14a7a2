"""`include` benchmark: what attaching relations costs a list, against the requests a client made without it.

    .venv/bin/python loadtests/include_bench.py [--database-url URL] [--rows N] [--rounds R]

A gateway runs in this process (ASGI, no sockets) on a library of N books, each with an author and two
reviews. Each round times, in alternating order:
- `plain`: `GET /api/Books?filter={"limit": N}`;
- `include`: the same with `"include": ["author", "reviews"]` (three SQL queries in all);
- `by hand`: what a client without `include` does: the list, then `GET /api/Authors/{id}` per distinct
  author and `GET /api/Books/{id}/reviews` per book.
It prints the median wall time and the median CPU time of this process per request form; on a shared box
the CPU figure is the steadier one. `--database-url` names a PostgreSQL server (a database of its own is
created and dropped); the default is a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx

from gateway.app import create_app
from gateway.config import Settings

MODELS = {
    "author": {"name": "Author", "properties": {"name": "string"}, "relations": {}},
    "book": {
        "name": "Book",
        "properties": {"title": "string"},
        "relations": {
            "author": {"type": "belongsTo", "model": "Author"},
            "reviews": {"type": "hasMany", "model": "Review"},
        },
    },
    "review": {"name": "Review", "properties": {"stars": "number"}},
}


async def seed(client: httpx.AsyncClient, rows: int) -> None:
    authors = max(1, rows // 10)
    await client.post("/api/Authors", json=[{"name": f"a{i}"} for i in range(authors)])
    await client.post(
        "/api/Books", json=[{"title": f"b{i}", "authorId": 1 + i % authors} for i in range(rows)]
    )
    reviews = [{"stars": s, "bookId": 1 + i} for i in range(rows) for s in (3, 5)]
    await client.post("/api/Reviews", json=reviews)


def forms(client: httpx.AsyncClient, rows: int) -> dict[str, Callable[[], Awaitable[int]]]:
    async def plain() -> int:
        response = await client.get("/api/Books", params={"filter": json.dumps({"limit": rows})})
        return len(response.json())

    async def included() -> int:
        flt = {"limit": rows, "include": ["author", "reviews"]}
        books = (await client.get("/api/Books", params={"filter": json.dumps(flt)})).json()
        return sum(len(b["reviews"]) for b in books)

    async def by_hand() -> int:
        books = (await client.get("/api/Books", params={"filter": json.dumps({"limit": rows})})).json()
        for author in {b["authorId"] for b in books}:
            (await client.get(f"/api/Authors/{author}")).json()
        reviews = 0
        for book in books:
            reviews += len((await client.get(f"/api/Books/{book['id']}/reviews")).json())
        return reviews

    return {"plain": plain, "include": included, "by hand": by_hand}


async def run(database_url: str, rows: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as models:
        for name, model in MODELS.items():
            (Path(models) / f"{name}.json").write_text(json.dumps(model))
        app = create_app(Settings(database_url=database_url, models=Path(models), log_level="warning"))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await seed(client, rows)
                timings: dict[str, list[tuple[float, float]]] = {}
                measured = forms(client, rows)
                for round_ in range(rounds):
                    order = list(measured) if round_ % 2 == 0 else list(reversed(measured))
                    for name in order:
                        wall, cpu = time.perf_counter(), time.process_time()
                        await measured[name]()
                        timings.setdefault(name, []).append(
                            (time.perf_counter() - wall, time.process_time() - cpu)
                        )
    print(f"{database_url.split(':', 1)[0]}, {rows} books, {rounds} rounds (median per request form):")
    for name, samples in timings.items():
        wall = statistics.median(s[0] for s in samples) * 1000
        cpu = statistics.median(s[1] for s in samples) * 1000
        print(f"  {name:8s} {wall:8.1f} ms wall {cpu:8.1f} ms CPU")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="postgresql://... server; default: a SQLite file")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.database_url is None:
        with tempfile.TemporaryDirectory() as directory:
            await run(f"sqlite+aiosqlite:///{directory}/bench.db", args.rows, args.rounds)
        return
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = args.database_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        await run(f"{base}/{name}", args.rows, args.rounds)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
