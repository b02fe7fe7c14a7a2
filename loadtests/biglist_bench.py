"""Memory of one worker under the big-list attack: N clients listing a table of R rows at once, repeatedly.

A/B in one run, alternating: `GATEWAY_MAX_PAGE_SIZE=0` (LoopBack 3's behaviour, no cap) against the default
cap (10,000), each on a fresh `gateway serve` (SQLite, memory broker) seeded with the same rows. Prints the
worker's RSS before, its peak during the attack (sampled every 20 ms), `/readyz` latency during it, and
what the clients got:

    python -m loadtests.biglist_bench --rows 40000 --clients 20 --rounds 3 --pairs 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter

import httpx

from loadtests.gatewayproc import GatewayConfig, gateway
from loadtests.procstat import rss_bytes, tree

CREATE_BATCH = 1000


async def seed(url: str, rows: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for start in range(0, rows, CREATE_BATCH):
            batch = [
                {"title": f"row {n}", "priority": n} for n in range(start, min(rows, start + CREATE_BATCH))
            ]
            (await client.post("/api/Todos", json=batch)).raise_for_status()


async def attack(url: str, pid: int, clients: int, rounds: int) -> dict[str, object]:
    peak = 0
    ready_ms: list[float] = []
    statuses: Counter[int] = Counter()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
            while not done.is_set():
                peak = max(peak, rss_bytes(tree(pid)))
                started = time.perf_counter()
                await probe.get("/readyz")
                ready_ms.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    limits = httpx.Limits(max_connections=clients)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        for _ in range(rounds):
            replies = await asyncio.gather(*(client.get("/api/Todos") for _ in range(clients)))
            statuses.update(reply.status_code for reply in replies)
    elapsed = time.monotonic() - started
    done.set()
    await sampler
    return {
        "peak_mb": peak / 2**20,
        "readyz_p50_ms": statistics.median(ready_ms),
        "readyz_max_ms": max(ready_ms),
        "statuses": dict(statuses),
        "seconds": elapsed,
    }


async def one(label: str, page_size: str, args: argparse.Namespace) -> None:
    config = GatewayConfig(extra_env={"GATEWAY_MAX_PAGE_SIZE": page_size, "GATEWAY_MAX_CREATE_ROWS": "1000"})
    with gateway(config) as running:
        await seed(running.url, args.rows)
        before = rss_bytes(tree(running.pid)) / 2**20
        result = await attack(running.url, running.pid, args.clients, args.rounds)
    print(
        f"{label:>18}: RSS {before:6.1f} MB before, peak {result['peak_mb']:6.1f} MB; "
        f"/readyz p50 {result['readyz_p50_ms']:.1f} ms, max {result['readyz_max_ms']:.0f} ms; "
        f"replies {result['statuses']} in {result['seconds']:.1f} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.pairs):
        await one("no cap (LB3)", "0", args)
        await one("cap 10,000", "10000", args)


if __name__ == "__main__":
    asyncio.run(main())
