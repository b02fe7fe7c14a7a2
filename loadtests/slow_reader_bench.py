"""Slow-consumer benchmark: C fast readers, and optionally one reader throttled to a share of the event rate.

    python -m loadtests.slow_reader_bench -c 100 -w 50 -d 60                      # baseline: no slow reader
    python -m loadtests.slow_reader_bench -c 100 -w 50 -d 60 --throttle 0.1       # one reads 10 % of the rate

The throttled reader reads its socket (4 KB receive buffer) only as fast as `--throttle` times the event rate,
so the server stalls it past its bound and it catches up from history; when the writes end it reads at full
speed. The report says whether it got every event once and in order, the fast readers' commit→client
latency, the server's memory through the run (sampled every second) and the slow-consumer metrics.
Alternate runs with and without `--throttle` on a busy box (see loadtests/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import uvloop

from gateway.broker.continuity import Position, offset_key
from gateway.client.sse import SSEParser
from loadtests import procstat
from loadtests.fanout_bench import percentiles
from loadtests.gatewayproc import GatewayConfig, gateway
from loadtests.sseclient import Stats, open_subscribers
from loadtests.writer import WriteStats, drive

CATCH_UP_SECONDS = 120.0


class ThrottledReader:
    """One change stream read over a raw socket at no more than `rate` events per second."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._address = (host, port)
        self._path = path
        self._http = h11.Connection(h11.CLIENT)
        self._parser = SSEParser()
        self.ids: list[str] = []
        self.resets = 0
        self.ended = False

    async def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self._address)
        self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=4096)
        host, port = self._address
        request = h11.Request(
            method="GET",
            target=self._path,
            headers=[("host", f"{host}:{port}"), ("accept", "text/event-stream")],
        )
        self._writer.write(self._http.send(request) or b"")
        while not self._parser.last_event_id:
            await self._read(4096)
        self.ids.clear()

    async def _read(self, size: int) -> None:
        data = await self._reader.read(size)
        if not data:
            self.ended = True
            return
        self._http.receive_data(data)
        while (event := self._http.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Data):
                for sse in self._parser.feed(bytes(event.data)):
                    if sse.event == "data":
                        self.ids.append(sse.last_event_id)
                    elif sse.event == "reset":
                        self.resets += 1
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                return

    async def follow(self, rate: float, until: asyncio.Event) -> None:
        """Read at most `rate` events per second until `until` is set."""
        started = time.monotonic()
        while not until.is_set() and not self.ended:
            allowed = rate * (time.monotonic() - started)
            if len(self.ids) >= allowed:
                await asyncio.sleep(min(0.05, (len(self.ids) + 1 - allowed) / rate))
                continue
            await self._read(512)

    async def drain(self, expected: int, timeout: float) -> None:
        """Read at full speed until `expected` events came (or the stream ended, or `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.ids) < expected and not self.ended and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await self._read(65536)
            except TimeoutError:
                break

    def in_order_once(self) -> bool:
        keys = [offset_key(Position.parse(position).offset) for position in self.ids]
        return all(a < b for a, b in itertools.pairwise(keys))

    def close(self) -> None:
        self._writer.close()


def slow_consumer_metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_slow_subscriber_") and "_created" not in line:
            name = line.split("{", 1)[0].split(" ", 1)[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


async def run(args: argparse.Namespace, url: str, pids: list[int]) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = "/api/Todos/change-stream?_format=event-stream"
    stats = Stats()
    subscribers = await open_subscribers(host, port, path, args.subscribers, stats)
    await drive(host, port, "/api/Todos", rate=20, duration=1.0, stats=WriteStats())  # warm-up
    slow = ThrottledReader(host, port, path) if args.throttle else None
    if slow is not None:
        await slow.open()
    await asyncio.sleep(1.0)
    stats.reset()
    rss: list[float] = []
    done = asyncio.Event()

    async def sample_memory() -> None:
        while not done.is_set():
            rss.append(procstat.rss_bytes(pids) / 2**20)
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample_memory())
    following = (
        asyncio.create_task(slow.follow(args.throttle * args.rate * args.batch, done)) if slow else None
    )
    writes = WriteStats()
    before, started = procstat.Sample.take(pids), time.monotonic()
    await drive(
        host, port, "/api/Todos", rate=args.rate, duration=args.duration, stats=writes, batch=args.batch
    )
    window, elapsed = procstat.Sample.take(pids) - before, time.monotonic() - started
    await asyncio.sleep(2.0)
    done.set()
    await sampler
    result: dict[str, Any] = {
        "command": "python -m loadtests.slow_reader_bench " + shlex.join(args.argv),
        "events": writes.ok * args.batch,
        "fast_deliveries": stats.deliveries,
        "fast_expected": writes.ok * args.batch * len(subscribers),
        "fast_latency_ms": percentiles(stats.latencies_us, 1000),
        "rss_mb": {"first": round(rss[0], 1), "max": round(max(rss), 1), "last": round(rss[-1], 1)},
        "server_cores": round(window.server_cpu / elapsed, 3),
        # what the rest of the box (other developers' tests) took meanwhile: read latencies against it
        "other_cores": round(max(0.0, window.machine_cpu - window.server_cpu - window.own_cpu) / elapsed, 3),
    }
    if slow is not None and following is not None:
        await following
        during = len(slow.ids)
        await slow.drain(writes.ok * args.batch, CATCH_UP_SECONDS)
        result["slow"] = {
            "received_during_writes": during,
            "received": len(slow.ids),
            "expected": writes.ok * args.batch,
            "in_order_once": slow.in_order_once() and len(set(slow.ids)) == len(slow.ids),
            "resets": slow.resets,
            "ended": slow.ended,
        }
        slow.close()
    result["metrics"] = slow_consumer_metrics(url)
    for subscriber in subscribers:
        subscriber.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", "-c", type=int, default=100)
    parser.add_argument("--rate", "-w", type=float, default=50.0, help="POSTs per second")
    parser.add_argument("--batch", type=int, default=1, help="records created per POST")
    parser.add_argument("--duration", "-d", type=float, default=60.0)
    parser.add_argument("--throttle", type=float, default=0.0, help="the slow reader's share of the rate")
    parser.add_argument("--max-events", type=int, help="GATEWAY_SUBSCRIBER_MAX_EVENTS for the server")
    parser.add_argument("--gateway-src", type=Path, help="another `gateway` package to run (A/B)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.argv = sys.argv[1:] if argv is None else argv
    env = {"GATEWAY_SUBSCRIBER_MAX_EVENTS": str(args.max_events)} if args.max_events else None
    with gateway(GatewayConfig(extra_env=env, source=args.gateway_src)) as running:
        result = uvloop.run(run(args, running.url, procstat.tree(running.pid)))
    print(json.dumps(result, indent=2))
    if args.json_out:
        with open(args.json_out, "a") as handle:
            handle.write(json.dumps(result) + "\n")
    slow = result.get("slow")
    return 0 if slow is None or (slow["in_order_once"] and slow["received"] == slow["expected"]) else 1


if __name__ == "__main__":
    sys.exit(main())
