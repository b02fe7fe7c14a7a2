"""The gateway side by side with its peers, one neutral probe against each, alternated in one run.

Peers: LoopBack 3 (the system the gateway replaces; `peers/lb3/`, installed from npm into a scratch
directory by `peers/lb3/install.sh`) and Nchan (nginx's pub/sub module in C, Debian's libnginx-mod-nchan;
`peers/nchan.conf.in`), in memory and on Redis. The client is `peers/probe.js` (Node's raw `http`, several
processes, its own CPU reported), the same for every server. Each measurement starts its server afresh;
server CPU is utime+stime from /proc of every process of the server, plus the Redis this run starts for
itself when the server uses Redis (so no one else's Redis traffic is counted). Medians of the rounds are
printed as a table with the gateway's ratios to LoopBack 3 and to Nchan + Redis. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import procstat
from loadtests.gatewayproc import GatewayConfig, free_port, gateway

PEERS = Path(__file__).resolve().parent / "peers"
SERVERS = ("gateway", "lb3", "nchan", "nchan-redis")
MORE_SERVERS = ("gateway-2w", "gateway-nginx", "gateway-base")
"""`gateway-2w`: one server of two workers (`--workers 2`, one SO_REUSEPORT socket each); `gateway-nginx`:
the gateway behind deploy/nginx.conf (one nginx worker; its CPU counts as the server's); `gateway-base`: the
tree given by `--gateway-src` (A/B)."""
SATURATION_P99_MS = 100.0
SATURATION_WRITERS = (1, 2, 4, 8, 16, 32, 64)
NCHAN_REDIS = "upstream nchan_redis {{ nchan_redis_server {url}; }}"
NCHAN_STORE = "nchan_redis_pass nchan_redis;"


@dataclass
class Running:
    url: str
    pids: list[int]  # roots of the server's process trees (its own Redis included)


@contextlib.contextmanager
def own_redis() -> Iterator[tuple[str, int]]:
    """A Redis of this run's own, without persistence, on a free port."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait(f"redis://127.0.0.1:{port}", process, probe=lambda: _redis_ping(port))
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.terminate()
        process.wait(10)


def _redis_ping(port: int) -> bool:
    import redis

    with contextlib.closing(redis.Redis(port=port)) as client:
        return bool(client.ping())


def _http_ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as reply:
        return bool(reply.status == 200)


def _wait(what: str, process: subprocess.Popen[bytes], probe: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError, ConnectionError):
            if probe():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


@contextlib.contextmanager
def _process(command: list[str], url: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[Running]:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait(command[0], process, probe=lambda: _http_ready(url))
        yield Running(url, [process.pid])
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def server(name: str, redis: tuple[str, int], args: argparse.Namespace) -> Iterator[Running]:
    """Server `name` on a free port, for the duration of the block."""
    redis_url, redis_pid = redis
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if name.startswith("gateway"):
        source = args.gateway_src if name == "gateway-base" else None
        broker = "redis" if name == "gateway-2w" else args.gateway_broker
        workers = 2 if name == "gateway-2w" else 1
        config = GatewayConfig(broker=broker, redis_url=redis_url, source=source, workers=workers)
        with gateway(config) as running:
            extra = [redis_pid] if broker == "redis" else []
            if name != "gateway-nginx":
                yield Running(running.url, running.pids + extra)
            else:
                with deploy_nginx(running.url) as proxied:
                    yield Running(proxied.url, proxied.pids + running.pids + extra)
    elif name == "lb3":
        directory = Path(
            subprocess.check_output(
                ["sh", str(PEERS / "lb3" / "install.sh"), args.lb3_dir], text=True
            ).strip()
        )
        with _process(
            ["node", "server.js"], url, directory, env={"PORT": str(port), "PATH": "/usr/bin:/bin"}
        ) as running:
            yield running
    elif name in ("nchan", "nchan-redis"):
        directory = Path(tempfile.mkdtemp(prefix="gwpeer-nchan-"))
        on_redis = name == "nchan-redis"
        conf = (
            (PEERS / "nchan.conf.in")
            .read_text()
            .replace("@DIR@", str(directory))
            .replace("@PORT@", str(port))
            .replace("@UPSTREAM@", NCHAN_REDIS.format(url=redis_url.removesuffix("/0")) if on_redis else "")
            .replace("@STORE@", NCHAN_STORE if on_redis else "")
        )
        (directory / "nginx.conf").write_text(conf)
        try:
            command = ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")]
            with _process(command, url, directory) as running:
                yield Running(url, running.pids + ([redis_pid] if on_redis else []))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        raise ValueError(f"unknown server {name!r}; one of {', '.join(SERVERS + MORE_SERVERS)}")


@contextlib.contextmanager
def deploy_nginx(upstream: str) -> Iterator[Running]:
    """deploy/nginx.conf (rendered as tests/deploy does: ports and paths only) in front of `upstream`."""
    from tests.deploy.harness import render_nginx_conf

    directory = Path(tempfile.mkdtemp(prefix="gwpeer-deploy-nginx-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    conf = render_nginx_conf(port=port, upstreams=[upstream.removeprefix("http://")], directory=directory)
    (directory / "nginx.conf").write_text(conf)
    try:
        command = ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g", "daemon off;"]
        with _process(command, url, directory) as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _warm_up(url: str) -> None:
    for _ in range(3):
        request = urllib.request.Request(
            f"{url}/api/Todos", data=b'{"title":"warm-up"}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()


def measure(
    name: str, readers: int, events: int, writers: int, redis: tuple[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """One probe run against a fresh server: the probe's report plus the server's CPU and memory."""
    with server(name, redis, args) as running:
        _warm_up(running.url)
        time.sleep(1.0)
        pids = [pid for root in running.pids for pid in procstat.tree(root)]
        rss_empty = procstat.rss_bytes(pids)
        config = {
            "url": running.url,
            "readers": readers,
            "events": events,
            "writers": writers,
            "readerProcs": args.reader_procs,
            "writerProcs": min(writers, args.writer_procs),
        }
        probe = subprocess.Popen(
            ["node", str(PEERS / "probe.js")],
            env={"PATH": "/usr/bin:/bin", "PROBE": json.dumps(config)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdin is not None
        assert probe.stdout is not None
        if probe.stdout.readline().strip() != "OPEN":
            raise RuntimeError(f"probe against {name} failed to open its streams")
        time.sleep(2.0)  # every subscription settled (Nchan + Redis subscribes asynchronously)
        pids = [pid for root in running.pids for pid in procstat.tree(root)]
        rss_open = procstat.rss_bytes(pids)
        before = procstat.Sample.take(pids)
        probe.stdin.write("go\n")
        probe.stdin.flush()
        line = probe.stdout.readline()
        window = procstat.Sample.take(pids) - before
        probe.wait(30)
        if not line.startswith("DONE "):
            raise RuntimeError(f"probe against {name} ended without a report")
        report: dict[str, Any] = json.loads(line[5:])
        deliveries = max(1, report["deliveries"])
        report.update(
            server=name,
            serverCpuSeconds=window.server_cpu,
            cpuPerDeliveryUs=window.server_cpu / deliveries * 1e6,
            cpuPerPostMs=window.server_cpu / max(1, events) * 1e3,
            rssPerStreamKb=(rss_open - rss_empty) / max(1, readers) / 1024,
            otherCoresUsed=(window.machine_cpu - window.server_cpu - report["probeCpuSeconds"])
            / report["windowSeconds"],
        )
        return report


ROWS = (
    ("server CPU per delivery, µs", "cpuPerDeliveryUs", "{:.1f}"),
    ("server CPU / POSTs (fan-out included), ms", "cpuPerPostMs", "{:.2f}"),
    ("p50 commit→reader, ms", ("latencyMs", "p50"), "{:.1f}"),
    ("p99 commit→reader, ms", ("latencyMs", "p99"), "{:.1f}"),
    ("POST p50, ms", ("postMs", "p50"), "{:.2f}"),
    ("POST p99, ms", ("postMs", "p99"), "{:.2f}"),
    ("deliveries/s", "deliveriesPerSecond", "{:,.0f}"),
    ("RSS per open stream, KB", "rssPerStreamKb", "{:.1f}"),
    ("deliveries received / expected", "received", "{:.4f}"),
    ("probe CPU, s", "probeCpuSeconds", "{:.2f}"),
    ("other cores busy (box)", "otherCoresUsed", "{:.2f}"),
)


def _value(report: dict[str, Any], key: str | tuple[str, str]) -> float:
    if key == "received":
        return float(report["deliveries"]) / max(1, report["expected"])
    if isinstance(key, tuple):
        return float(report[key[0]][key[1]] or 0.0)
    return float(report[key])


def print_table(scenario: str, servers: list[str], runs: dict[str, list[dict[str, Any]]]) -> None:
    ratios = [(s, f"gateway / {s}") for s in ("lb3", "nchan-redis") if s in servers and "gateway" in servers]
    print(f"\n### {scenario} (medians of {min(len(r) for r in runs.values())} rounds)\n")
    print("| | " + " | ".join([*servers, *(label for _, label in ratios)]) + " |")
    print("|---" * (1 + len(servers) + len(ratios)) + "|")
    for label, key, fmt in ROWS:
        medians = {s: statistics.median(_value(r, key) for r in runs[s]) for s in servers}
        cells = [fmt.format(medians[s]) for s in servers]
        cells += [f"{medians['gateway'] / medians[s]:.2f}x" if medians[s] else "-" for s, _ in ratios]
        print(f"| {label} | " + " | ".join(cells) + " |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, of: %(default)s, {', '.join(MORE_SERVERS)}",
    )
    parser.add_argument(
        "--scenario", action="append", help="READERSxEVENTS[xWRITERS]; repeatable (default 200x200, 1000x50)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reader-procs", type=int, default=2, help="probe processes holding the streams")
    parser.add_argument(
        "--writer-procs", type=int, default=2, help="probe processes sharing the POST connections"
    )
    parser.add_argument(
        "--saturate",
        action="store_true",
        help=f"per scenario READERSxEVENTS, raise the POST connections ({', '.join(map(str, SATURATION_WRITERS))})"
        f" until p99 commit->reader passes {SATURATION_P99_MS:.0f} ms; report the most deliveries/s below it",
    )
    parser.add_argument("--gateway-broker", choices=("memory", "redis"), default="redis")
    parser.add_argument("--gateway-src", type=Path, help="the gateway tree run as server gateway-base (A/B)")
    parser.add_argument(
        "--lb3-dir", default="/tmp/lb3peer", help="scratch directory for LoopBack 3's npm install"
    )
    parser.add_argument("--json-out", type=Path, help="append every run's report here, one JSON line each")
    return parser.parse_args(argv)


def saturate(
    name: str, readers: int, events: int, redis: tuple[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Raise the POST connections until p99 commit->reader passes the bound (or deliveries go missing);
    the run with the most deliveries/s within it, with every step's report."""
    steps = []
    best: dict[str, Any] | None = None
    for writers in SATURATION_WRITERS:
        report = measure(name, readers, events, writers, redis, args)
        _log(report, f"saturate:{readers}x{events}", args)
        steps.append({"writers": writers, **report})
        within = report["latencyMs"]["p99"] <= SATURATION_P99_MS and _value(report, "received") >= 0.999
        if not within:
            break
        if best is None or report["deliveriesPerSecond"] > best["deliveriesPerSecond"]:
            best = {"writers": writers, **report}
    if best is None:
        best = {**steps[0], "writers": 0, "deliveriesPerSecond": 0.0}  # not even one connection within
    return {
        **best,
        "steps": [(s["writers"], round(s["deliveriesPerSecond"]), s["latencyMs"]["p99"]) for s in steps],
    }


def print_saturation(scenario: str, servers: list[str], runs: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n### saturation, {scenario}: most deliveries/s with p99 <= {SATURATION_P99_MS:.0f} ms\n")
    print(
        "| server | deliveries/s (median) | per round | POST connections | server cores | probe cores | other cores |"
    )
    print("|---|---|---|---|---|---|---|")
    medians = {}
    for name in servers:
        reports = runs[name]
        medians[name] = statistics.median(r["deliveriesPerSecond"] for r in reports)

        def cores(key: str, reports: list[dict[str, Any]] = reports) -> str:
            return "/".join(f"{r[key] / r['windowSeconds']:.2f}" for r in reports)

        per_round = ", ".join(f"{r['deliveriesPerSecond']:,.0f}" for r in reports)
        connections = ", ".join(str(r["writers"]) for r in reports)
        others = "/".join(f"{r['otherCoresUsed']:.2f}" for r in reports)
        print(
            f"| {name} | {medians[name]:,.0f} | {per_round} | {connections} | {cores('serverCpuSeconds')} | "
            f"{cores('probeCpuSeconds')} | {others} |"
        )
    for a, b in (("gateway", "lb3"), ("gateway", "nchan-redis"), ("gateway-2w", "gateway")):
        if a in medians and b in medians and medians[b]:
            print(f"\n{a} / {b}: {medians[a] / medians[b]:.2f}x", end="")
    print()


def _log(report: dict[str, Any], scenario: str, args: argparse.Namespace) -> None:
    print(json.dumps(report), file=sys.stderr, flush=True)
    if args.json_out is not None:
        with args.json_out.open("a") as out:
            out.write(json.dumps({"scenario": scenario, **report}) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = args.servers.split(",")
    scenarios = args.scenario or ["200x200", "1000x50"]
    with own_redis() as redis:
        for scenario in scenarios:
            readers, events, *rest = (int(part) for part in scenario.split("x"))
            writers = rest[0] if rest else 1
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
            for round_ in range(args.rounds):
                order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
                for name in order:
                    if args.saturate:
                        runs[name].append(saturate(name, readers, events, redis, args))
                    else:
                        report = measure(name, readers, events, writers, redis, args)
                        _log(report, scenario, args)
                        runs[name].append(report)
            if args.saturate:
                print_saturation(scenario, servers, runs)
            else:
                print_table(scenario, servers, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
