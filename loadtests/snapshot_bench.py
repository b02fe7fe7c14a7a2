"""Snapshot over SSE vs list-then-watch: how long until a client holds N rows and is live.

    python -m loadtests.snapshot_bench --rows 10000 --rounds 3

"snapshot": one `GET /api/Todos/change-stream?snapshot=true`, read until `event: snapshot-end`.
"list-then-watch": `GET /api/Todos` (its `X-Change-Stream-Position`), then the stream with `lastEventId`, read
until its first byte. Alternated on one `gateway serve` (SQLite, memory broker) holding N rows; reports the
wall time and the server CPU of each.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from loadtests import procstat
from loadtests.gatewayproc import GatewayConfig, gateway

STREAM = "/api/Todos/change-stream"


async def snapshot(http: httpx.AsyncClient) -> int:
    rows = 0
    async with http.stream("GET", STREAM, params={"snapshot": "true"}) as response:
        buffer = b""
        async for chunk in response.aiter_raw():
            buffer += chunk
            if b"event: snapshot-end" in buffer:
                break
        rows = buffer.count(b"event: data")
    return rows


async def list_then_watch(http: httpx.AsyncClient) -> int:
    listed = await http.get("/api/Todos")
    position = listed.headers["x-change-stream-position"]
    async with http.stream("GET", STREAM, params={"lastEventId": position}) as response:
        async for _chunk in response.aiter_raw():
            break
    return len(listed.json())


async def main_async(args: argparse.Namespace) -> None:
    with gateway(GatewayConfig(extra_env={"GATEWAY_SNAPSHOT_MAX_ROWS": str(args.rows)})) as running:
        pids = procstat.tree(running.pid)
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as http:
            for start in range(0, args.rows, 2000):
                batch = [
                    {"title": f"row {n}", "priority": n} for n in range(start, min(args.rows, start + 2000))
                ]
                (await http.post("/api/Todos", json=batch)).raise_for_status()
            print(f"rows={args.rows}")
            print("mode              rows   wall ms  server CPU ms  others (cores)")
            for _ in range(args.rounds):
                for name, way in (("snapshot", snapshot), ("list-then-watch", list_then_watch)):
                    before = procstat.Sample.take(pids)
                    started = time.perf_counter()
                    rows = await way(http)
                    wall = time.perf_counter() - started
                    used = procstat.Sample.take(pids) - before
                    others = max(0.0, (used.machine_cpu - used.server_cpu - used.own_cpu) / wall)
                    print(
                        f"{name:<16} {rows:>5}  {wall * 1000:>8.0f}  {used.server_cpu * 1000:>13.0f}  {others:.2f}"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
