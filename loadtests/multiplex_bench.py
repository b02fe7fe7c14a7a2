"""One multiplexed connection per client vs one connection per model: what the server pays.

    python -m loadtests.multiplex_bench --clients 300 --rate 20 --duration 15 --rounds 2

Each client follows three models (Todo, Color, Shape): either as three per-model streams
(`/api/<Plural>/change-stream`, "per-model") or one `/api/change-stream?models=Todo,Color,Shape`
("multiplexed"). Writes go to Todo, so every client gets each write once either way. The two are
alternated, each on a fresh `gateway serve` (SQLite, memory broker), and the report gives per mode: server
CPU per delivered event, commit→client latency, and server RSS per client with the streams idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from loadtests import procstat
from loadtests.fanout_bench import percentiles
from loadtests.gatewayproc import DEFAULT_MODELS, GatewayConfig, gateway
from loadtests.sseclient import Stats, open_subscribers
from loadtests.writer import WriteStats, drive

MODELS = ("Todo", "Color", "Shape")
PATHS = {
    "per-model": [f"/api/{name}s/change-stream" for name in MODELS],
    "multiplexed": ["/api/change-stream?models=" + ",".join(MODELS)],
}


def models_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="gwbench-models-"))
    (directory / "todo.json").write_text((DEFAULT_MODELS / "todo.json").read_text())
    for name in MODELS[1:]:
        definition = {"name": name, "base": "PersistedModel", "properties": {"name": {"type": "string"}}}
        (directory / f"{name.lower()}.json").write_text(json.dumps(definition))
    return directory


async def measure(mode: str, args: argparse.Namespace, models: Path) -> dict[str, float]:
    with gateway(GatewayConfig(models=models)) as running:
        parts = urlsplit(running.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        pids = procstat.tree(running.pid)
        rss_empty = procstat.rss_bytes(pids)
        stats = Stats()
        for path in PATHS[mode]:
            await open_subscribers(host, port, path, args.clients, stats)
        await asyncio.sleep(1.0)
        rss_loaded = procstat.rss_bytes(procstat.tree(running.pid))
        stats.reset()
        before = procstat.Sample.take(pids)
        started = time.monotonic()
        writes = WriteStats()
        await drive(host, port, "/api/Todos", rate=args.rate, duration=args.duration, stats=writes)
        expected = writes.ok * args.clients
        deadline = time.monotonic() + 15
        while stats.deliveries < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        window = procstat.Sample.take(pids) - before
        elapsed = time.monotonic() - started
        latency = percentiles(stats.latencies_us, 1000.0)
        return {
            "connections": stats.connected,
            "deliveries": stats.deliveries,
            "expected": expected,
            "cpu_us_per_delivery": window.server_cpu / max(1, stats.deliveries) * 1e6,
            "p50_ms": latency.get("p50", 0.0),
            "p99_ms": latency.get("p99", 0.0),
            "rss_kb_per_client": (rss_loaded - rss_empty) / args.clients / 1024,
            "others_cores": max(0.0, (window.machine_cpu - window.server_cpu - window.own_cpu) / elapsed),
        }


async def main_async(args: argparse.Namespace) -> None:
    models = models_dir()
    print(f"clients={args.clients} rate={args.rate}/s duration={args.duration}s, three models per client")
    print("mode         conns  delivered/expected  CPU us/delivery  p50 ms  p99 ms  RSS KB/client  others")
    for _ in range(args.rounds):
        for mode in ("per-model", "multiplexed"):
            r = await measure(mode, args, models)
            print(
                f"{mode:<12} {r['connections']:>5.0f}  {r['deliveries']:>8.0f}/{r['expected']:<8.0f}  "
                f"{r['cpu_us_per_delivery']:>15.1f}  {r['p50_ms']:>6.1f}  {r['p99_ms']:>6.1f}  "
                f"{r['rss_kb_per_client']:>13.1f}  {r['others_cores']:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
