"""Locust: users that hold change streams, users that write, users that read with filters.

    bash loadtests/run_locust.sh                       # starts a gateway, 1,000 streams, 50 writes/s, 60 s
    locust -f loadtests/locustfile.py --host http://gateway:3000 --headless -u 1011 -r 200 -t 60s \\
        --writers 10 --readers 1 --write-rate 50 --csv loadtests/reports/run --html loadtests/reports/run.html

- `StreamUser` (all users beyond the fixed writers and readers) holds one SSE change stream, reads it frame
  by frame with `readline(b"\\n\\n")` (never `iter_content(chunk_size)`, which waits for a full chunk and
  inflates latency tenfold; STACK-NOTES) and reports every event as a request of type `SSE` whose response
  time is the delivery latency: receive time minus the writer's timestamp. Creates and patches carry the
  timestamp in `title`; a remove has no data, so the writer notes when it sent each DELETE (users share one
  process; with `--processes` or distributed workers, removes are reported without latency as
  `remove (untimed)`). A cut-off stream is resumed with `Last-Event-ID`, reported as `reconnect`.
- `WriterUser` creates (60 %), patches (30 %) and deletes (10 %) at `--write-rate` writes/s in total.
- `ReaderUser` lists, counts and finds with `where`/`order`/`limit` filters, `--read-rate` reads/s in total.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment

STREAM_PATH = "/api/Todos/change-stream?_format=event-stream"
DELETE_SENT: dict[int, int] = {}  # record id -> time.time_ns() right before its DELETE was sent


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--writers", type=int, default=10, help="writer users (fixed count)")
    parser.add_argument("--readers", type=int, default=1, help="REST reader users (fixed count)")
    parser.add_argument("--write-rate", type=float, default=50.0, help="writes per second, all writers")
    parser.add_argument("--read-rate", type=float, default=5.0, help="reads per second, all readers")


@events.init.add_listener
def _configure(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    WriterUser.fixed_count = options.writers
    ReaderUser.fixed_count = options.readers
    WriterUser.wait_time = constant_throughput(options.write_rate / max(1, options.writers))
    ReaderUser.wait_time = constant_throughput(options.read_rate / max(1, options.readers))


def _latency_ms(frame: bytes, received_ns: int) -> tuple[str, float | None]:
    """The change type and its delivery latency (None when the frame carries no timestamp)."""
    data = frame[frame.find(b"\ndata: ") + 7 : frame.rfind(b"\n\n")]
    change = json.loads(data)
    kind = change["type"]
    stamp = (change.get("data") or {}).get("title", "")
    if kind != "remove" and stamp.isdigit():
        return kind, (received_ns - int(stamp)) / 1e6
    sent = DELETE_SENT.get(change.get("target", -1))
    if kind == "remove" and sent is not None:
        return kind, (received_ns - sent) / 1e6
    return f"{kind} (untimed)", None


class StreamUser(FastHttpUser):
    """One browser tab: follows the change stream for ever, resuming where it was cut off."""

    weight = 1
    network_timeout = 60.0  # above the gateway's 15 s heartbeat
    connection_timeout = 30.0

    def on_start(self) -> None:
        self.last_event_id: str | None = None

    @task
    def follow(self) -> None:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
            self._fire("reconnect", 0.0, 0)
        response = self.client.get(STREAM_PATH, headers=headers, stream=True, name="change-stream (open)")
        if response.status_code != 200:
            return
        stream = response._response  # geventhttpclient's response: readline() decodes the chunking
        if stream is None:
            return
        fire = self._fire
        while True:
            frame = stream.readline(b"\n\n")
            if not frame:
                return  # the server ended the stream: the next task run resumes
            received = time.time_ns()
            if frame.startswith(b"id: "):  # the gateway puts `id:` first in every frame that has one
                self.last_event_id = frame[4 : frame.find(b"\n")].decode()
            if b"\nevent: data\n" not in frame:
                continue  # `:ok`, `retry:`, `: ping`, an id-only bookmark, a reset
            kind, latency = _latency_ms(frame, received)
            fire(kind, latency or 0.0, len(frame))

    def _fire(self, name: str, latency_ms: float, length: int) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=latency_ms,
            response_length=length,
            exception=None,
            context={},
        )


class WriterUser(FastHttpUser):
    """Creates, patches and deletes Todos; `title` is always the send time in ns."""

    fixed_count = 10
    wait_time = constant_throughput(5.0)

    def on_start(self) -> None:
        self.ids: list[int] = []

    @task(6)
    def create(self) -> None:
        with self.client.post(
            "/api/Todos", json={"title": str(time.time_ns())}, name="/api/Todos [create]", catch_response=True
        ) as response:
            if response.status_code == 200:
                self.ids.append(response.json()["id"])

    @task(3)
    def patch(self) -> None:
        if not self.ids:
            return self.create()
        ident = random.choice(self.ids)
        body = {"title": str(time.time_ns()), "done": random.random() < 0.5}
        self.client.patch(f"/api/Todos/{ident}", json=body, name="/api/Todos/{id} [patch]")

    @task(1)
    def delete(self) -> None:
        if not self.ids:
            return self.create()
        ident = self.ids.pop(random.randrange(len(self.ids)))
        DELETE_SENT[ident] = time.time_ns()
        self.client.delete(f"/api/Todos/{ident}", name="/api/Todos/{id} [delete]")


class ReaderUser(FastHttpUser):
    """REST reads with LoopBack filters (JSON and bracket forms)."""

    fixed_count = 1
    wait_time = constant_throughput(5.0)

    @task(3)
    def list_open(self) -> None:
        flt = json.dumps({"where": {"done": False}, "order": "id DESC", "limit": 20})
        self.client.get(f"/api/Todos?filter={flt}", name="/api/Todos?filter=[where,order,limit]")

    @task(1)
    def count_done(self) -> None:
        self.client.get("/api/Todos/count?where[done]=true", name="/api/Todos/count?where")

    @task(1)
    def find_one(self) -> None:
        flt = json.dumps({"where": {"title": {"like": "1%"}}, "order": "id ASC"})
        name = "/api/Todos/findOne?filter=[like]"
        with self.client.get(f"/api/Todos/findOne?filter={flt}", name=name, catch_response=True) as response:
            if response.status_code == 404:  # LoopBack's answer while nothing matches yet
                response.success()
