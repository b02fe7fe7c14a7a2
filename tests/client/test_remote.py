"""The remote client (`gateway.client.remote`) against real gateways over real HTTP, and against a scripted
HTTP server for the wire-level cases a gateway does not produce on demand (5xx, Retry-After, bookmarks
right before a disconnect)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway.client.remote import ChangeStreamRejected, GatewayUnreachable, RemoteChangeStream
from gateway.client.sse import SSEParser
from gateway.streams import Change, Reset, StreamItem, UnknownModelError
from tests.client import Writer, changes_of, eventually, patch, post, resets_of, take
from tests.client.conftest import GatewayFactory
from tests.conftest import DatabaseFactory
from tests.server import free_port


async def test_yields_what_the_sse_stream_sends_and_resumes_from_any_position(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client,
        client.stream("GET", "/api/Todos/change-stream") as raw,
        RemoteChangeStream(gateway.url, model="Todo") as everything,
        RemoteChangeStream(
            f"{gateway.url}/api/Todos/change-stream", where={"done": False}, fields=["title"]
        ) as undone,
    ):
        assert everything.url == f"{gateway.url}/api/Todos/change-stream"
        a = await post(client, "/api/Todos", {"title": "a"})
        b = await post(client, "/api/Todos", {"title": "b", "done": True})
        await patch(client, f"/api/Todos/{b['id']}", {"done": False})
        await patch(client, f"/api/Todos/{a['id']}", {"done": True})
        await client.delete(f"/api/Todos/{b['id']}")

        items = await take(everything, 5)
        events = await _read_sse(raw, 5)
        assert items == [Change(event_id, json.loads(data)) for event_id, data in events]
        assert changes_of(await take(undone, 4)) == [
            {"target": a["id"], "data": {"title": "a"}, "type": "create"},
            {"target": b["id"], "data": {"title": "b"}, "type": "create"},
            {"target": a["id"], "where": {"id": a["id"]}, "type": "remove"},
            {"target": b["id"], "where": {"id": b["id"]}, "type": "remove"},
        ]

        # A change the filter drops yields nothing, but the gateway's bookmark moves the position.
        skipped = await post(client, "/api/Todos", {"title": "x", "done": True})
        [last] = await take(everything, 1)
        assert isinstance(last, Change)
        assert last.target == skipped["id"]
        pending = asyncio.create_task(anext(undone))

        async def bookmarked() -> bool:
            return undone.position == last.position

        await eventually(bookmarked, what="a bookmark moving the filtered stream's position")
        await undone.aclose()  # from this task, while another waits in __anext__
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 5.0)

        async with RemoteChangeStream(gateway.url, model="Todos", start=items[1].position) as resumed:
            assert await take(resumed, 4) == [*items[2:], last]
        async with RemoteChangeStream(gateway.url, model="Todo", start="earliest") as earliest:
            assert await take(earliest, 6) == [*items, last]
        epoch = items[0].position.split("-")[0]
        stale = ("zzzzzzzz" if epoch != "zzzzzzzz" else "yyyyyyyy") + "-1-0"
        async with RemoteChangeStream(gateway.url, model="Todo", start=stale) as lost:
            c = await post(client, "/api/Todos", {"title": "c"})
            got = await take(lost, 7)
            # As in the in-process API: told so, then everything of the current epoch, then live.
            assert got[0] == Reset("epoch-changed", f"{epoch}-0-0")
            assert got[1:7] == [*items, last]
            assert changes_of(got[7:]) == [{"target": c["id"], "data": c, "type": "create"}]


async def _read_sse(response: httpx.Response, count: int) -> list[tuple[str, str]]:
    parser = SSEParser()
    events: list[tuple[str, str]] = []
    chunks = response.aiter_raw()
    async with asyncio.timeout(20.0):
        while len(events) < count:
            events += [
                (e.last_event_id, e.data) for e in parser.feed(await anext(chunks)) if e.event == "data"
            ]
    return events


async def test_every_change_once_in_order_across_gateway_restarts_under_continuous_writes(
    gateways: GatewayFactory,
    postgres_database: DatabaseFactory,
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gateway.client")
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix, database_url=await postgres_database())
    received: list[StreamItem] = []
    async with RemoteChangeStream(gateway.url, model="Todo", retry=0.05, max_backoff=0.5) as stream:

        async def read() -> None:
            async for item in stream:
                received.append(item)

        reader = asyncio.create_task(read())
        try:
            async with Writer(gateway.url) as writer:
                await writer.wait_for(30)
                await asyncio.to_thread(gateway.stop)  # SIGTERM: drains, streams end, clients resume
                await asyncio.to_thread(gateway.start, 60.0)
                await writer.wait_for(30)

                async def caught_up() -> bool:  # so the SIGKILL finds it connected, not in backoff
                    return len(received) >= len(writer.acked)

                await eventually(caught_up, within=30.0, what="the client resuming after the restart")
                await asyncio.to_thread(gateway.kill)  # SIGKILL: connections just drop
                await asyncio.to_thread(gateway.start, 60.0)
                await writer.wait_for(30)
            written = await _all_ids(gateway.url)
            assert set(writer.acked) <= set(written)
            assert writer.failures > 0  # the writer did run into the restarts

            async def all_received() -> bool:
                return len(received) >= len(written)

            await eventually(all_received, within=30.0, what="every write reaching the client")
        finally:
            await stream.aclose()
            await reader
    assert not resets_of(received)
    assert [change["target"] for change in changes_of(received)] == written
    assert sum("resuming" in record.message for record in caplog.records) >= 2  # it did lose the gateway


async def _all_ids(url: str) -> list[int]:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/api/Todos", params={"filter": json.dumps({"order": "id ASC"})})
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()]


async def test_client_errors_raise_at_once_instead_of_retrying(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    async with asyncio.timeout(10.0):  # a client error retried (open_timeout=None) would hang here
        with pytest.raises(UnknownModelError, match=r"serves no model 'Nope'; it serves: Todo \(Todos\)"):
            async with RemoteChangeStream(gateway.url, model="Nope", open_timeout=None):
                pass
        with pytest.raises(ChangeStreamRejected) as rejected:
            async with RemoteChangeStream(f"{gateway.url}/api/Nopes/change-stream", open_timeout=None):
                pass
        assert rejected.value.status_code == 404
        with pytest.raises(ChangeStreamRejected, match="nope") as bad_filter:
            async with RemoteChangeStream(gateway.url, model="Todo", where={"nope": 1}, open_timeout=None):
                pass
        assert bad_filter.value.status_code == 400
    with pytest.raises(ValueError, match="not a stream position"):
        RemoteChangeStream(gateway.url, model="Todo", start="yesterday")


async def test_an_unreachable_gateway_raises_after_the_open_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(GatewayUnreachable, match=f"cannot reach the gateway at {url}"):
        async with RemoteChangeStream(url, model="Todo", open_timeout=0.5, retry=0.05):
            pass
    assert loop.time() - started < 5.0
    with pytest.raises(GatewayUnreachable):
        async with RemoteChangeStream(f"{url}/api/Todos/change-stream", open_timeout=0):
            pass


# -- a scripted server: each connection gets the next scripted reply --

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n"


@asynccontextmanager
async def scripted(replies: list[bytes | None]) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP server whose n-th connection gets `replies[n]` (written, then the connection is closed), or,
    for None, an SSE head with nothing after it, held open. Yields its URL and each request's headers."""
    requests: list[dict[str, str]] = []
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        requests.append({k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)})
        reply = replies[len(requests) - 1] if len(requests) <= len(replies) else replies[-1]
        if reply is None:
            writer.write(SSE_HEAD)
            held.append(writer)
            return
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/Todos/change-stream", requests
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def _http(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


ERROR_503 = _http(
    "503 Service Unavailable", b'{"error":{"statusCode":503,"message":"draining"}}', "retry-after: 0"
)
ERROR_500 = _http("500 Internal Server Error", b'{"error":{"statusCode":500,"message":"boom"}}')
CHANGE = b'{"target":1,"data":{"title":"a","id":1},"type":"create"}'


async def test_retries_5xx_honours_retry_and_resumes_from_the_last_bookmark() -> None:
    first = (
        SSE_HEAD
        + b"retry: 20\n:ok\n\nid: abcdefgh-1-0\n\n"
        + b"id: abcdefgh-2-0\nevent: data\ndata: "
        + CHANGE
        + b"\n\n: ping\n\nid: abcdefgh-9-0\n\n"  # a bookmark, then the connection ends
    )
    second = (
        SSE_HEAD
        + b'id: abcdefgh-12-0\nevent: reset\ndata: {"reason":"history-expired","position":"abcdefgh-12-0"}\n\n'
    )
    async with scripted([ERROR_503, ERROR_500, first, ERROR_503, second, None]) as (url, requests):
        async with RemoteChangeStream(url, open_timeout=5.0, retry=0.01) as stream:
            items = [await asyncio.wait_for(anext(stream), 5.0) for _ in range(2)]
            assert items == [
                Change("abcdefgh-2-0", json.loads(CHANGE)),
                Reset("history-expired", "abcdefgh-12-0"),
            ]
            assert stream.position == "abcdefgh-12-0"
        assert [r.get("last-event-id") for r in requests] == [
            None,
            None,
            None,
            "abcdefgh-9-0",
            "abcdefgh-9-0",
        ]
        assert all(r["accept"] == "text/event-stream" for r in requests)


async def test_a_4xx_while_resuming_ends_the_stream_with_an_error() -> None:
    gone = _http("404 Not Found", b'{"error":{"statusCode":404,"message":"There is no method"}}')
    first = SSE_HEAD + b"id: abcdefgh-1-0\nevent: data\ndata: " + CHANGE + b"\n\n"
    async with scripted([first, gone]) as (url, requests):
        async with RemoteChangeStream(url, retry=0.01) as stream:
            assert await anext(stream) == Change("abcdefgh-1-0", json.loads(CHANGE))
            with pytest.raises(ChangeStreamRejected, match="404 There is no method"):
                await asyncio.wait_for(anext(stream), 5.0)
        assert [r.get("last-event-id") for r in requests] == [None, "abcdefgh-1-0"]
