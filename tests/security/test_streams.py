"""Change streams with security on, over real HTTP (uvicorn in this process, memory broker, SQLite):
`$owner` on live and replayed events, refusal before the stream starts, the end at token expiry, tickets,
the session cookie and the open-streams limit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.app import GatewayApp
from gateway.config import Settings
from tests.security.conftest import bearer, make_token
from tests.sse.helpers import OpenStream, open_stream, serve

NOTES = "/api/Notes"
STREAM = "/api/Notes/change-stream?_format=event-stream"
ALICE = bearer(make_token("alice"))
BOB = bearer(make_token("bob"))
ADMIN = bearer(make_token("root", roles=["admin"]))


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp]]:
    async with serve(settings) as (url, app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, app


def started(stream: OpenStream) -> bool:
    return stream.parser.last_event_id != ""


def owners(stream: OpenStream) -> set[Any]:
    return {change["data"]["ownerId"] for change in stream.changes() if "data" in change}


def kinds(stream: OpenStream) -> list[tuple[str, str]]:
    return [(c["type"], c.get("data", {}).get("title", c["target"])) for c in stream.changes()]


async def read_to_end(stream: OpenStream, timeout: float) -> None:
    try:
        await stream.read_until(lambda _: False, timeout)
    except StopAsyncIteration:
        return
    raise AssertionError("the stream did not end")


async def test_owner_scopes_live_and_replayed_events(secured_settings: Callable[..., Settings]) -> None:
    async with gateway(secured_settings()) as (client, _):
        async with (
            open_stream(client, STREAM, headers=ALICE) as alice,
            open_stream(client, STREAM, headers=BOB) as bob,
            open_stream(client, STREAM, headers=ADMIN) as admin,
        ):
            for stream in (alice, bob, admin):
                await stream.read_until(started)
            start = alice.parser.last_event_id
            a1 = (await client.post(NOTES, json={"title": "a1"}, headers=ALICE)).json()
            b1 = (await client.post(NOTES, json={"title": "b1"}, headers=BOB)).json()
            await client.patch(f"{NOTES}/{a1['id']}", json={"title": "a1+"}, headers=ALICE)
            await client.delete(f"{NOTES}/{b1['id']}", headers=BOB)
            # An admin hands alice's note to bob: it leaves alice's stream and enters bob's.
            await client.patch(f"{NOTES}/{a1['id']}", json={"ownerId": "bob"}, headers=ADMIN)
            await admin.read_until(lambda s: len(s.data_events) >= 5)
            await alice.read_until(lambda s: len(s.data_events) >= 3)
            await bob.read_until(lambda s: len(s.data_events) >= 3)
        assert kinds(alice) == [("create", "a1"), ("update", "a1+"), ("remove", a1["id"])]
        assert owners(alice) == {"alice"}
        assert kinds(bob) == [("create", "b1"), ("remove", b1["id"]), ("create", "a1+")]
        assert owners(bob) == {"bob"}
        assert len(admin.data_events) == 5

        # Replay is scoped the same way, and authorised by whoever reconnects, not whose position it was.
        head = admin.parser.last_event_id
        for headers, expected in ((BOB, kinds(bob)), (ALICE, kinds(alice))):
            async with open_stream(client, STREAM, headers={**headers, "Last-Event-ID": start}) as replay:
                # Up to the head: the data frames, then a bookmark once the stream is idle.
                await replay.read_until(lambda s: s.parser.last_event_id == head)
            assert kinds(replay) == expected


async def test_streams_are_refused_before_they_start(secured_settings: Callable[..., Settings]) -> None:
    async with gateway(secured_settings()) as (client, app):
        cases = [
            ({}, STREAM, 401, "AUTHORIZATION_REQUIRED"),
            (bearer("junk"), STREAM, 401, "INVALID_TOKEN"),
            (bearer(make_token(ttl=-100)), STREAM, 401, "INVALID_TOKEN"),
            (ALICE, "/api/Vaults/change-stream", 403, "ACCESS_DENIED"),
            ({}, "/api/Notes/change-stream?ticket=forged", 401, "INVALID_TOKEN"),
        ]
        for headers, path, status, code in cases:
            reply = await client.get(path, headers={**headers, "Accept": "text/event-stream"})
            assert reply.status_code == status
            assert reply.headers["content-type"].startswith("application/json")
            assert reply.json()["error"]["code"] == code
        assert app.gateway.hub.count == 0
        async with open_stream(client, "/api/Boards/change-stream") as board:
            assert board.response.status_code == 200


async def test_streams_get_the_headers_every_response_gets(secured_settings: Callable[..., Settings]) -> None:
    """Streams are served ahead of FastAPI's stack: the middleware around the app must still see them."""
    origin = "https://app.example"
    async with gateway(secured_settings(cors_origins=[origin])) as (client, _):
        headers = {"Origin": origin, "X-Request-ID": "trace-1"}
        refused = await client.get(STREAM, headers=headers)
        async with open_stream(client, STREAM, headers={**headers, **ALICE}) as stream:
            await stream.read_until(started)
            await client.post(NOTES, json={"title": "a1"}, headers=ALICE)
            await stream.read_until(lambda s: len(s.data_events) == 1)
        for reply in (refused, stream.response):
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["x-frame-options"] == "DENY"
            assert reply.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
            assert reply.headers["access-control-allow-origin"] == origin
            assert reply.headers["access-control-allow-credentials"] == "true"
            assert reply.headers["x-request-id"] == "trace-1"
        assert refused.status_code == 401
        assert stream.response.headers["content-type"] == "text/event-stream"
        assert kinds(stream) == [("create", "a1")]


async def test_a_stream_ends_when_its_token_expires(secured_settings: Callable[..., Settings]) -> None:
    async with gateway(secured_settings()) as (client, app):
        expires = time.time() + 2
        short = bearer(make_token("alice", ttl=2))
        async with open_stream(client, STREAM, headers=short) as stream:
            await stream.read_until(started)
            await client.post(NOTES, json={"title": "before"}, headers=ALICE)
            await stream.read_until(lambda s: len(s.data_events) >= 1)
            await read_to_end(stream, timeout=10)
        ended = time.time()
        assert expires <= ended < expires + 4
        errors = [e for e in stream.events if e.event == "error"]
        assert [json.loads(e.data) for e in errors] == [{"reason": "token-expired"}]
        assert stream.events[-1].event == "error"
        last = stream.parser.last_event_id
        await client.post(NOTES, json={"title": "meanwhile"}, headers=ALICE)
        await client.post(NOTES, json={"title": "not yours"}, headers=BOB)
        # Reconnecting with fresh credentials resumes where the expired stream stopped.
        async with open_stream(client, STREAM, headers={**ALICE, "Last-Event-ID": last}) as resumed:
            await resumed.read_until(lambda s: len(s.data_events) >= 1)
            await asyncio.sleep(0.2)
        assert kinds(resumed) == [("create", "meanwhile")]
        assert app.gateway.hub.count <= 1


async def test_stream_tickets(secured_settings: Callable[..., Settings]) -> None:
    async with gateway(secured_settings(auth_ticket_ttl=1)) as (client, _):

        async def ticket(model: str, headers: dict[str, str] = ALICE) -> str:
            reply = await client.post("/auth/stream-ticket", json={"model": model}, headers=headers)
            assert reply.status_code == 200
            value: str = reply.json()["ticket"]
            return value

        used = await ticket("Note")
        async with open_stream(client, f"{STREAM}&ticket={used}") as stream:
            assert stream.response.status_code == 200
            await stream.read_until(started)
            await client.post(NOTES, json={"title": "theirs"}, headers=BOB)
            await client.post(NOTES, json={"title": "mine"}, headers=ALICE)
            await stream.read_until(lambda s: len(s.data_events) >= 1)
            again = await client.get(f"{STREAM}&ticket={used}")
            assert again.status_code == 401
            assert "already used" in again.json()["error"]["message"]
        assert kinds(stream) == [("create", "mine")]

        board = await ticket("Board")
        wrong = await client.get(f"{STREAM}&ticket={board}")
        assert wrong.status_code == 401
        assert "another model" in wrong.json()["error"]["message"]

        stale = await ticket("Note")
        await asyncio.sleep(1.5)
        assert (await client.get(f"{STREAM}&ticket={stale}")).status_code == 401

        # A ticket carries its token's expiry: the stream ends with the token, not the ticket.
        short = await ticket("Note", bearer(make_token("alice", ttl=2)))
        async with open_stream(client, f"{STREAM}&ticket={short}") as stream:
            await read_to_end(stream, timeout=10)
        assert stream.events[-1].event == "error"


async def test_cookie_authenticates_a_stream(secured_settings: Callable[..., Settings]) -> None:
    async with gateway(secured_settings()) as (client, _):
        token = make_token("alice")
        async with open_stream(client, STREAM, headers={"Cookie": f"gateway_token={token}"}) as stream:
            assert stream.response.status_code == 200
            await stream.read_until(started)
            await client.post(NOTES, json={"title": "theirs"}, headers=BOB)
            await client.post(NOTES, json={"title": "mine"}, headers=ALICE)
            await stream.read_until(lambda s: len(s.data_events) >= 1)
        assert kinds(stream) == [("create", "mine")]


async def test_open_streams_per_principal(secured_settings: Callable[..., Settings]) -> None:
    async with gateway(secured_settings(limit_streams_per_principal=1)) as (client, app):
        async with open_stream(client, STREAM, headers=ALICE) as first:
            await first.read_until(started)
            refused = await client.get(STREAM, headers=ALICE)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
            assert "retry-after" in refused.headers
            async with open_stream(client, STREAM, headers=BOB) as other:
                assert other.response.status_code == 200
        deadline = time.monotonic() + 10
        while app.gateway.hub.count:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with open_stream(client, STREAM, headers=ALICE) as again:
            assert again.response.status_code == 200
