"""Fan-out benchmark: C change-stream subscribers, W creates per second, what the server pays per delivery.

    python -m loadtests.fanout_bench --subscribers 1000 --rate 20 --duration 30
    python -m loadtests.fanout_bench --idle --subscribers 5000
    python -m loadtests.fanout_bench --target http://127.0.0.1:3000 --server-pid 1234 ...

Without `--target` it starts `gateway serve` itself (SQLite or PostgreSQL, memory or Redis broker, 1 or N
workers) with a database and Redis prefix of its own, and removes them afterwards. See loadtests/README.md
for what each reported number means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shlex
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

from loadtests import procstat
from loadtests.cpuquota import capped_workers
from loadtests.gatewayproc import GatewayConfig, gateway
from loadtests.sseclient import Stats, open_subscribers
from loadtests.writer import WriteStats, drive

DRAIN_IDLE = 2.0  # stop waiting for stragglers after this long without a new delivery
DRAIN_MAX = 15.0


@dataclass
class Report:
    command: str
    subscribers: int
    rate: float
    batch: int
    duration: float
    workers: int | None
    instances: int = 1
    worker_cpu: float | None = None  # each worker's CPU quota in cores, if capped
    ready: int = 0
    open_seconds: float = 0.0
    rss_empty_mb: float | None = None
    rss_loaded_mb: float | None = None
    rss_per_connection_kb: float | None = None
    writes_ok: int = 0
    writes_failed: int = 0
    writes_late: int = 0
    expected: int = 0
    deliveries: int = 0
    window_seconds: float = 0.0
    deliveries_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    post_ms: dict[str, float] = field(default_factory=dict)
    server_cpu_seconds: float | None = None
    server_system_share: float | None = None  # kernel (stime) part of the server's CPU
    server_cpu_us_per_delivery: float | None = None
    server_cpu_seconds_per_1000: float | None = None
    server_cpu_utilisation: float | None = None
    client_cpu_utilisation: float = 0.0
    other_cpu_utilisation: float | None = None
    pings: int = 0
    disconnects: int = 0
    errors: list[str] = field(default_factory=list)


def percentiles(samples: Any, scale: float) -> dict[str, float]:
    if not len(samples):
        return {}
    ordered = sorted(samples)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(float(ordered[min(last, int(q * len(ordered)))]) / scale, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[last] / scale, 2)}


def _tree(root_pids: list[int]) -> list[int]:
    return [pid for root in root_pids for pid in procstat.tree(root)]


async def run(args: argparse.Namespace, urls: list[str], root_pids: list[int], report: Report) -> None:
    """Against one server, or several (`--instances`): streams and writes are then spread evenly over
    them, as a load balancer would, and the server figures are summed."""
    servers = [(parts.hostname or "127.0.0.1", parts.port or 80) for parts in map(urlsplit, urls)]
    stream_path = f"{args.rest_root}/{args.model}/change-stream?_format=event-stream"
    write_path = f"{args.rest_root}/{args.model}"
    pids = _tree(root_pids)
    source_ips = args.source_ips.split(",") if args.source_ips else None

    async def write_everywhere(rate: float, duration: float, stats: WriteStats, connections: int = 8) -> None:
        share = len(servers)
        await asyncio.gather(
            *(
                drive(
                    host,
                    port,
                    write_path,
                    rate=rate / share,
                    duration=duration,
                    stats=stats,
                    batch=args.batch,
                    connections=max(1, connections // share),
                )
                for host, port in servers
            )
        )

    # Warm-up: one stream each and a few writes load everything lazy (routes, reader, relay, DB pool).
    warm = Stats()
    warm_subscribers = [
        subscriber
        for host, port in servers
        for subscriber in await open_subscribers(host, port, stream_path, 1, warm)
    ]
    await write_everywhere(20, 0.25, WriteStats())
    await asyncio.sleep(0.3)
    for subscriber in warm_subscribers:
        subscriber.close()
    await asyncio.sleep(1.0)
    gc.collect()
    if pids:
        pids = _tree(root_pids)
        report.rss_empty_mb = procstat.rss_bytes(pids) / 2**20

    stats = Stats()
    began = time.monotonic()
    opened = await asyncio.gather(
        *(
            open_subscribers(
                host,
                port,
                stream_path,
                args.subscribers // len(servers) + (index < args.subscribers % len(servers)),
                stats,
                source_ips=source_ips,
                timeout=args.open_timeout,
            )
            for index, (host, port) in enumerate(servers)
        )
    )
    subscribers = [subscriber for group in opened for subscriber in group]
    report.open_seconds = round(time.monotonic() - began, 2)
    report.ready = stats.ready
    if stats.ready < args.subscribers:
        stats.errors.append(f"only {stats.ready} of {args.subscribers} streams got ':ok'")
    await asyncio.sleep(args.settle)
    if pids and report.rss_empty_mb is not None:
        report.rss_loaded_mb = procstat.rss_bytes(pids) / 2**20
        if args.subscribers:
            extra = (report.rss_loaded_mb - report.rss_empty_mb) * 1024
            report.rss_per_connection_kb = round(extra / args.subscribers, 2)

    if args.idle:
        before = procstat.Sample.take(pids)
        await asyncio.sleep(args.duration)
        window = procstat.Sample.take(pids) - before
        _cpu(report, window, args.duration, pids)
        report.window_seconds = args.duration
    else:
        # A second of load before measuring, then count from zero.
        await write_everywhere(args.rate, 1.0, WriteStats())
        await asyncio.sleep(0.5)
        stats.reset()
        writes = WriteStats()
        before = procstat.Sample.take(pids)
        started = time.monotonic()
        await write_everywhere(args.rate, args.duration, writes, args.writers)
        expected = writes.ok * args.batch * stats.ready
        last, quiet_since = stats.deliveries, time.monotonic()
        while stats.deliveries < expected and time.monotonic() - started < args.duration + DRAIN_MAX:
            await asyncio.sleep(0.05)
            if stats.deliveries != last:
                last, quiet_since = stats.deliveries, time.monotonic()
            elif time.monotonic() - quiet_since > DRAIN_IDLE:
                break
        elapsed = time.monotonic() - started
        window = procstat.Sample.take(pids) - before
        report.writes_ok, report.writes_failed, report.writes_late = writes.ok, writes.failed, writes.late
        report.expected = expected
        report.deliveries = stats.deliveries
        report.window_seconds = round(elapsed, 2)
        report.deliveries_per_second = round(stats.deliveries / elapsed, 1)
        report.latency_ms = percentiles(stats.latencies_us, 1000)
        report.post_ms = percentiles(writes.latencies_us, 1000)
        _cpu(report, window, elapsed, pids)
        if stats.deliveries and report.server_cpu_seconds is not None:
            per = report.server_cpu_seconds / stats.deliveries
            report.server_cpu_us_per_delivery = round(per * 1e6, 2)
            report.server_cpu_seconds_per_1000 = round(per * 1000, 5)
        stats.errors.extend(writes.errors[:5])
    report.pings = stats.pings
    report.disconnects = stats.disconnects
    report.errors = stats.errors[:10]
    for subscriber in subscribers:
        subscriber.close()
    await asyncio.sleep(0.2)


def _cpu(report: Report, window: procstat.Sample, elapsed: float, pids: list[int]) -> None:
    report.client_cpu_utilisation = round(window.own_cpu / elapsed, 3)
    if pids:
        report.server_cpu_seconds = round(window.server_cpu, 3)
        if window.server_cpu > 0:
            report.server_system_share = round(window.server_system / window.server_cpu, 2)
        report.server_cpu_utilisation = round(window.server_cpu / elapsed, 3)
        other = window.machine_cpu - window.server_cpu - window.own_cpu
        report.other_cpu_utilisation = round(max(0.0, other) / elapsed, 3)


def print_report(report: Report, idle: bool) -> None:
    out = [f"$ {report.command}"]
    out.append(
        f"subscribers ready      {report.ready}/{report.subscribers} (opened in {report.open_seconds} s)"
    )
    if report.rss_per_connection_kb is not None:
        out.append(
            f"server RSS             empty {report.rss_empty_mb:.1f} MB, with streams "
            f"{report.rss_loaded_mb:.1f} MB -> {report.rss_per_connection_kb} KB per connection"
        )
    if not idle:
        out.append(
            f"writes                 {report.writes_ok} ok, {report.writes_failed} failed, "
            f"{report.writes_late} started >10 ms late (offered {report.rate}/s x {report.batch} per POST)"
        )
        out.append(
            f"deliveries             {report.deliveries} of {report.expected} expected in "
            f"{report.window_seconds} s = {report.deliveries_per_second}/s"
        )
        out.append(
            f"commit->client ms      {report.latency_ms}  (client receive time - writer stamp before POST)"
        )
        out.append(f"POST latency ms        {report.post_ms}")
    if report.server_cpu_seconds is not None:
        line = (
            f"server CPU             {report.server_cpu_seconds} s ({report.server_cpu_utilisation} cores, "
            f"{report.server_system_share} of it in the kernel)"
        )
        if report.server_cpu_us_per_delivery is not None:
            line += (
                f" = {report.server_cpu_us_per_delivery} us per delivery"
                f" = {report.server_cpu_seconds_per_1000} s per 1,000"
            )
        out.append(line)
        out.append(
            f"other CPU on the box   client {report.client_cpu_utilisation} cores, "
            f"everything else {report.other_cpu_utilisation} cores"
        )
    out.append(f"heartbeats {report.pings}, disconnects {report.disconnects}, errors {report.errors}")
    print("\n".join(out))
    print("RESULT " + json.dumps(asdict(report)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", help="base URL of a running gateway (default: start one)")
    parser.add_argument("--server-pid", type=int, help="pid of the --target server, for CPU/RSS figures")
    parser.add_argument("--subscribers", "-c", type=int, default=100)
    parser.add_argument("--rate", "-w", type=float, default=10.0, help="POSTs per second")
    parser.add_argument("--batch", type=int, default=1, help="records created per POST (array body)")
    parser.add_argument("--duration", "-d", type=float, default=20.0, help="seconds of writes (or idling)")
    parser.add_argument("--idle", action="store_true", help="open the streams, write nothing, report RSS")
    parser.add_argument("--model", default="Todos", help="the model's plural, as in the URL")
    parser.add_argument("--rest-root", default="/api")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer connections")
    parser.add_argument("--source-ips", help="comma-separated client addresses, e.g. 127.0.0.2,127.0.0.3")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between opening and measuring")
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--broker", choices=["memory", "redis"], default="memory")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (> 1 needs --broker redis)")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="gateway servers on separate ports sharing the database and Redis, like hosts behind a load "
        "balancer: streams and writes are spread evenly over them (> 1 needs --broker redis)",
    )
    parser.add_argument(
        "--gateway-src", type=Path, help="directory holding another `gateway` package to run (A/B baseline)"
    )
    parser.add_argument(
        "--worker-cpu",
        type=float,
        help="cap each gateway worker at this many cores (a cgroup CPU quota; root only), to compare 1 and N "
        "workers each with a CPU budget of its own on a box with too few cores",
    )
    parser.add_argument("--keep-log", action="store_true", help="keep the started gateway's log")
    parser.add_argument("--json-out", type=Path, help="append the result as one JSON line to this file")
    return parser.parse_args(argv)


def measure(argv: list[str]) -> Report:
    """Run one benchmark as the command line `argv` says; prints and returns its report."""
    args = parse_args(argv)
    command = "python -m loadtests.fanout_bench " + shlex.join(argv)
    report = Report(command, args.subscribers, args.rate, args.batch, args.duration, None)
    if args.target:
        server: Any = nullcontext(None)
    else:
        config = GatewayConfig(
            database=args.database,
            broker=args.broker,
            workers=args.workers,
            instances=args.instances,
            source=args.gateway_src,
        )
        report.workers = args.workers
        report.instances = args.instances
        server = gateway(config, keep_log=args.keep_log)
    with ExitStack() as stack:
        running = stack.enter_context(server)
        urls = [args.target] if args.target else running.urls
        root_pids = ([args.server_pid] if args.server_pid else []) if args.target else running.pids
        if args.worker_cpu is not None:
            capped = [stack.enter_context(capped_workers(pid, args.worker_cpu)) for pid in root_pids]
            report.worker_cpu = args.worker_cpu
            count = sum(map(len, capped))
            print(f"capped {count} worker process(es) at {args.worker_cpu} cores each", file=sys.stderr)
        uvloop.run(run(args, urls, root_pids, report))
    print_report(report, args.idle)
    if args.json_out:
        with open(args.json_out, "a") as handle:
            handle.write(json.dumps(asdict(report)) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    report = measure(sys.argv[1:] if argv is None else argv)
    return 1 if report.errors or report.ready < report.subscribers else 0


if __name__ == "__main__":
    sys.exit(main())
