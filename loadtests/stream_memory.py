"""Where an idle change stream's bytes go: the gateway in this process, streams opened by a client process.

    python -m loadtests.stream_memory --streams 2000 [--frames 12] [--top 25]

The server runs here (uvicorn with the options of `gateway serve`, uvloop and the guarded httptools
protocol) so that tracemalloc sees every Python allocation; a separate process (`loadtests.sseclient`)
opens the streams. It opens N streams, takes a snapshot, opens N more and takes another: the difference,
divided by N, is what one more idle stream costs, by allocation site (innermost frame) and by owner (the
first frame of the stack in the gateway, uvicorn, starlette, asyncio...). It also prints the RSS growth per
stream and the live objects per stream by type (gc), which tracemalloc cannot attribute when C code (uvloop,
httptools) allocates outside Python's allocator. Figures only; not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

import uvicorn

from loadtests import procstat
from loadtests.gatewayproc import DEFAULT_MODELS, free_port

STREAM_PATH = "/api/Todos/change-stream?_format=event-stream"
OWNERS = (
    ("gateway/", "gateway"),
    ("uvicorn/", "uvicorn"),
    ("starlette/", "starlette"),
    ("fastapi/", "fastapi"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "uvloop"),
    ("httptools/", "httptools"),
)


def owner(frames: tracemalloc.Traceback) -> str:
    """The package of the innermost frame that belongs to a known package."""
    for frame in reversed(frames):  # tracemalloc lists the oldest frame first
        for marker, name in OWNERS:
            if marker in frame.filename:
                return name
    return Path(frames[0].filename).name


def site(frame: tracemalloc.Frame) -> str:
    parts = Path(frame.filename).parts
    return f"{'/'.join(parts[-2:])}:{frame.lineno}"


async def client_open(client: asyncio.subprocess.Process, count: int) -> None:
    assert client.stdin is not None
    assert client.stdout is not None
    client.stdin.write(f"{count}\n".encode())
    await client.stdin.drain()
    line = (await client.stdout.readline()).decode().strip()
    if line != f"OPEN {count}":
        raise RuntimeError(f"the client answered {line!r}")


def object_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


async def measure(args: argparse.Namespace) -> None:
    port = free_port()
    config = uvicorn.Config(
        "gateway.app:create_app",
        factory=True,
        interface="asgi3",
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
        http="gateway.ops.httpguard:GuardedHttpToolsProtocol",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.stream_memory",
        "--client",
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    pid = os.getpid()
    n = args.streams
    try:
        await client_open(client, n)
        if args.frames:  # after the boot: imports under tracemalloc take minutes
            tracemalloc.start(args.frames)
        await asyncio.sleep(1.0)
        gc.collect()
        rss_first = procstat.rss_bytes([pid])
        objects_first = object_counts()
        first = tracemalloc.take_snapshot() if args.frames else None
        await client_open(client, n)
        await asyncio.sleep(1.0)
        gc.collect()
        second = tracemalloc.take_snapshot() if args.frames else None
        objects_second = object_counts()
        rss_second = procstat.rss_bytes([pid])
    finally:
        client.kill()
        await client.wait()
        server.should_exit = True
        await serving
    report(args, n, first, second, rss_second - rss_first, objects_second - objects_first)


def report(
    args: argparse.Namespace,
    n: int,
    first: tracemalloc.Snapshot | None,
    second: tracemalloc.Snapshot | None,
    rss_growth: int,
    objects: collections.Counter[str],
) -> None:
    print(f"RSS growth per stream: {rss_growth / n / 1024:.2f} KB ({n} streams more)")
    if first is not None and second is not None:
        report_traces(args, n, second.compare_to(first, "traceback"))
    print("\nlive objects per stream, by type (gc):")
    for name, count in objects.most_common(args.top):
        if count / n >= 0.5:
            print(f"  {count / n:6.2f}  {name}")


def report_traces(args: argparse.Namespace, n: int, stats: list[tracemalloc.StatisticDiff]) -> None:
    by_owner: collections.Counter[str] = collections.Counter()
    by_site: collections.Counter[str] = collections.Counter()
    chains: dict[str, str] = {}
    for stat in stats:
        frames = stat.traceback
        by_owner[owner(frames)] += stat.size_diff
        innermost = list(reversed(frames))
        key = site(innermost[0])
        by_site[key] += stat.size_diff
        chains.setdefault(key, " < ".join(site(f) for f in innermost[1:4]))
    total = sum(s.size_diff for s in stats)
    print(f"tracemalloc growth per stream: {total / n / 1024:.2f} KB")
    print("\nby owner (innermost frame in a known package), bytes per stream:")
    for name, size in by_owner.most_common():
        if abs(size) / n >= 8:
            print(f"  {size / n:8.0f}  {name}")
    print(f"\nby allocation site, bytes per stream (top {args.top}):")
    for key, size in by_site.most_common(args.top):
        print(f"  {size / n:8.0f}  {key}   < {chains[key]}")


async def serve_client(port: int) -> None:
    """The client side: on each line `N` of stdin, open N more streams and answer `OPEN N`."""
    from loadtests.sseclient import Stats, open_subscribers

    stats = Stats(record=False)
    held = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        count = int(line)
        held += await open_subscribers("127.0.0.1", port, STREAM_PATH, count, stats)
        if stats.errors:
            print(f"ERRORS {stats.errors[:3]}", flush=True)
        else:
            print(f"OPEN {count}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=2000, help="N: streams per step (N, then 2N)")
    parser.add_argument("--frames", type=int, default=12, help="tracemalloc's traceback depth (0: off)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.client is not None:
        uvloop.run(serve_client(args.client))
        return
    workdir = tempfile.mkdtemp(prefix="stream-memory-")
    os.environ.setdefault("GATEWAY_MODELS", str(DEFAULT_MODELS))
    os.environ.setdefault("GATEWAY_DATABASE_URL", f"sqlite+aiosqlite:///{workdir}/gateway.db")
    os.environ.setdefault("GATEWAY_BROKER_URL", "memory://")
    os.environ.setdefault("GATEWAY_MAX_CONNECTIONS", "100000")
    uvloop.run(measure(args))


if __name__ == "__main__":
    main()
