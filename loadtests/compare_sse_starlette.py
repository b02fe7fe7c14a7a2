"""sse-starlette's EventSourceResponse against our raw ASGI responder, on the same broadcaster.

The smallest fair comparison: one tiny FastAPI app whose `POST /api/Todos` encodes one change frame (once)
and hands it to every open stream through the gateway's own `DeliveryQueue` (bounded, coalesced take), the
way the hub's stream reader does, each queue waking its stream's task per batch. Only the response machinery
differs between the modes:

- `raw-task`: a raw ASGI responder whose own task is woken per batch and awaits `send`;
- `sse-starlette`: `EventSourceResponse` over an async generator that waits on the same queue and yields the
  same pre-encoded bytes (sse-starlette passes bytes through untouched).

The gateway's own live path (writes started from the stream reader's task, `gateway/sse/connection.py`)
is measured against the gateway itself by loadtests/fanout_bench.py.

Each mode runs as its own uvicorn process (uvloop, httptools, 1 worker) and is measured by the same harness
(loadtests/fanout_bench.py) with the same subscribers and rate; the modes alternate over several rounds:

    python -m loadtests.compare_sse_starlette run --subscribers 1000 --rate 20 --duration 15 --rounds 2
    python -m loadtests.compare_sse_starlette serve --mode raw --port 3700   # one app, by hand
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import orjson
import uvicorn
from fastapi import FastAPI, Request
from sse_starlette import EventSourceResponse
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from gateway.fanout.queue import DeliveryQueue, State
from loadtests import fanout_bench
from loadtests.gatewayproc import free_port, wait_ready

MODES = ("raw-task", "sse-starlette")
HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
MAX_EVENTS, MAX_BYTES = 1000, 1_048_576


class Waking:
    """A queue's outlet that wakes one waiting task (the stream's) per batch, stall or close."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()

    def flush(self) -> None:
        self.ready.set()

    def wake(self) -> None:
        self.ready.set()

    def stalled(self) -> None:
        self.ready.set()

    def tick(self, now: float) -> None:
        return None

    async def wait(self) -> None:
        await self.ready.wait()
        self.ready.clear()


class Broadcaster:
    """Stands in for the hub's stream reader: one encoding per event, pushed to every queue."""

    def __init__(self) -> None:
        self.queues: dict[DeliveryQueue, Waking] = {}
        self.next_id = 0

    def publish(self, title: str) -> int:
        self.next_id += 1
        ident = self.next_id
        change = orjson.dumps({"target": ident, "data": {"title": title, "id": ident}, "type": "create"})
        offset = f"{ident}-0"
        frame = b"id: " + offset.encode() + b"\nevent: data\ndata: " + change + b"\n\n"
        for queue in self.queues:
            queue.push(frame, offset)
        for queue, outlet in self.queues.items():
            if queue.buffer:
                outlet.flush()
        return ident

    def subscribe(self) -> tuple[DeliveryQueue, Waking]:
        queue = DeliveryQueue(
            max_events=MAX_EVENTS, max_bytes=MAX_BYTES, replaying=False, epoch="", offset=""
        )
        outlet = Waking()
        queue.outlet = outlet
        self.queues[queue] = outlet
        return queue, outlet


class RawStream(Response):
    """A raw responder reduced to the live phase (no replay): headers and `:ok` at once, a disconnect
    watcher, then a woken task per batch."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.status_code = 200
        self.background = None
        self._broadcaster = broadcaster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        queue, outlet = self._broadcaster.subscribe()
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        watcher.add_done_callback(lambda _: queue.close("disconnect"))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b"retry: 3000\n:ok\n\n", "more_body": True})
            while True:
                await outlet.wait()
                if queue.state is State.CLOSED:
                    break
                if queue.buffer:
                    queue.writing = True
                    await send({"type": "http.response.body", "body": queue.take(), "more_body": True})
                    queue.writing = False
        finally:
            watcher.cancel()
            self._broadcaster.queues.pop(queue, None)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def build_app(mode: str) -> FastAPI:
    broadcaster = Broadcaster()
    app = FastAPI()

    @app.post("/api/Todos")
    async def create(request: Request) -> JSONResponse:
        title = orjson.loads(await request.body())["title"]
        loop = asyncio.get_running_loop()
        ident = broadcaster.next_id + 1
        loop.call_soon(broadcaster.publish, title)  # like the gateway: fan-out after the response
        return JSONResponse({"title": title, "id": ident})

    @app.get("/api/Todos/change-stream")
    async def stream() -> Response:
        if mode == "sse-starlette":
            return EventSourceResponse(_frames(broadcaster), ping=15)
        return RawStream(broadcaster)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


async def _frames(broadcaster: Broadcaster) -> AsyncIterator[bytes]:
    queue, outlet = broadcaster.subscribe()
    try:
        yield b"retry: 3000\n:ok\n\n"
        while True:
            await outlet.wait()
            if queue.state is State.CLOSED:
                return
            if queue.buffer:
                yield queue.take()
    finally:
        broadcaster.queues.pop(queue, None)


def serve(mode: str, port: int) -> None:
    uvicorn.run(
        build_app(mode), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


def run(args: argparse.Namespace) -> None:
    """Alternate the modes over `rounds`, each in a fresh server process, all measured by fanout_bench."""
    results: dict[str, list[dict[str, object]]] = {mode: [] for mode in args.modes}
    for _ in range(args.rounds):
        for mode in args.modes:
            port = free_port()
            command = [sys.executable, "-m", "loadtests.compare_sse_starlette", "serve", "--mode", mode]
            process = subprocess.Popen([*command, "--port", str(port)])
            try:
                wait_ready(f"http://127.0.0.1:{port}", process, log=None)
                bench = [
                    "--target",
                    f"http://127.0.0.1:{port}",
                    "--server-pid",
                    str(process.pid),
                    "--subscribers",
                    str(args.subscribers),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.duration),
                ]
                print(f"=== mode {mode}", flush=True)
                report = fanout_bench.measure(bench)
                results[mode].append(
                    {
                        "us_per_delivery": report.server_cpu_us_per_delivery,
                        "latency_ms": report.latency_ms,
                        "deliveries_per_second": report.deliveries_per_second,
                        "errors": report.errors,
                    }
                )
            finally:
                process.terminate()
                process.wait(10)
            time.sleep(1.0)
    print("SUMMARY " + json.dumps(results))
    for mode, rows in results.items():
        cpu = [row["us_per_delivery"] for row in rows]
        p50 = [row["latency_ms"].get("p50") for row in rows]  # type: ignore[attr-defined]
        p99 = [row["latency_ms"].get("p99") for row in rows]  # type: ignore[attr-defined]
        print(f"{mode:14} server CPU us/delivery {cpu}  p50 ms {p50}  p99 ms {p99}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("serve", help="serve one mode")
    one.add_argument("--mode", choices=MODES, required=True)
    one.add_argument("--port", type=int, default=3700)
    many = commands.add_parser("run", help="measure the modes, alternating")
    many.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    many.add_argument("--subscribers", type=int, default=1000)
    many.add_argument("--rate", type=float, default=20.0)
    many.add_argument("--duration", type=float, default=15.0)
    many.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.mode, args.port)
    else:
        run(args)


if __name__ == "__main__":
    main()
