"""deploy/nginx.conf in action, in front of scripted upstreams: what a change stream needs from the load
balancer (unbuffered, uncompressed, headers passed through, a draining worker's 503 retried elsewhere) and
what a browser gets when no instance can take its stream (an empty stream that says "retry", never an error
that would close its EventSource for good)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.deploy.harness import STREAM_PATH, Nginx
from tests.server import free_port

SSE = {"Accept": "text/event-stream"}


class Upstream:
    """A scripted HTTP/1.1 upstream: `refuse` answers change streams with a draining worker's 503; otherwise a
    stream sends `:ok`, waits, then an event, then ends. Records the headers of every request."""

    def __init__(self, *, refuse: bool) -> None:
        self.refuse = refuse
        self.port = free_port()
        self.requests: list[dict[str, str]] = []

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Upstream]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                headers[":path"] = lines[0].split()[1]
                self.requests.append(headers)
                if self.refuse:
                    body = b'{"error":{"statusCode":503}}'
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                for chunk, pause in (
                    (b":ok\n\n" + b": padding\n" * 200, 1.5),
                    (b"id: e-1-0\nevent: data\ndata: {}\n\n", 0),
                ):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    await asyncio.sleep(pause)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_draining_worker_is_skipped_and_streams_pass_unbuffered(tmp_path: Path) -> None:
    draining, serving = Upstream(refuse=True), Upstream(refuse=False)
    async with draining.serving(), serving.serving():
        nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{draining.port}", f"127.0.0.1:{serving.port}"])
        with nginx:
            async with httpx.AsyncClient(timeout=10.0) as client:
                for _ in range(2):  # round robin: one of the two tries starts at the draining upstream
                    started = time.monotonic()
                    headers = {
                        **SSE,
                        "Last-Event-ID": "e-0-0",
                        "Accept-Encoding": "gzip",
                        "X-Request-ID": "trace-7",
                    }
                    async with client.stream("GET", nginx.url + STREAM_PATH, headers=headers) as response:
                        assert response.status_code == 200
                        assert "content-encoding" not in response.headers  # never compressed
                        assert response.headers["x-request-id"] == "trace-7"
                        chunks = response.aiter_raw()
                        first = await anext(chunks)
                        assert first.startswith(b":ok")
                        assert (
                            time.monotonic() - started < 1.2
                        )  # not held back until the upstream's next write
                        rest = b"".join([chunk async for chunk in chunks])
                        assert b"event: data" in rest
    assert draining.requests, "nginx should have tried the draining upstream at least once"
    for request in serving.requests:
        assert request["last-event-id"] == "e-0-0"
        assert request["x-request-id"] == "trace-7"
        assert request["x-forwarded-for"] == "127.0.0.1"
        assert request["x-forwarded-proto"] == "http"
        assert request.get("connection", "") == ""  # HTTP/1.1 keep-alive to the upstream, not "close"


async def test_when_no_instance_can_take_a_stream(tmp_path: Path) -> None:
    refusing = Upstream(refuse=True)
    async with refusing.serving():
        dead = f"127.0.0.1:{free_port()}"
        for upstreams in ([dead], [f"127.0.0.1:{refusing.port}"]):
            with Nginx(tmp_path / f"nginx-{len(upstreams[0])}-{upstreams[0][-5:]}", upstreams) as nginx:
                async with httpx.AsyncClient(timeout=10.0) as client:
                    # An EventSource gets an empty stream that brings it back in 2 s with its Last-Event-ID.
                    browser = await client.get(nginx.url + STREAM_PATH, headers=SSE)
                    assert browser.status_code == 200
                    assert browser.headers["content-type"].startswith("text/event-stream")
                    assert browser.text == "retry: 2000\n\n"
                    negotiated = await client.get(nginx.url + STREAM_PATH + "?_format=event-stream")
                    assert negotiated.status_code == 200
                    # Other clients get LoopBack's envelope with 503 and Retry-After.
                    other = await client.get(nginx.url + STREAM_PATH, headers={"Accept": "application/json"})
                    assert other.status_code == 503
                    assert other.headers["retry-after"] == "2"
                    assert other.json()["error"]["statusCode"] == 503
                    # REST errors are not rewritten.
                    rest = await client.get(nginx.url + "/api/Todos")
                    assert rest.status_code in (502, 503)
