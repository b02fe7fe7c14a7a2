"""The multiplexed stream with security on: each model admitted by its own ACLs, `$owner` scoping per model,
one refusal refuses the whole connection (nothing stays registered), and stream tickets per model."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from gateway.config import Settings
from tests.polling import eventually
from tests.security.conftest import bearer, make_token
from tests.sse.helpers import open_stream, serve

ALICE = bearer(make_token("alice"))
BOB = bearer(make_token("bob"))
EDITOR = bearer(make_token("ed", roles=["editor"]))
STREAM = "/api/change-stream?models="


async def test_acls_and_owner_scope_apply_per_model(secured_settings: Callable[..., Settings]) -> None:
    async with serve(secured_settings()) as (url, app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with open_stream(client, STREAM + "Note,Board", headers=ALICE) as alice:
            await alice.read_until(lambda s: s.parser.last_event_id.count(":") == 2)
            await client.post("/api/Notes", json={"title": "bob's"}, headers=BOB)
            await client.post("/api/Boards", json={"title": "public"}, headers=EDITOR)
            await client.post("/api/Notes", json={"title": "alice's"}, headers=ALICE)
            await alice.read_until(lambda s: len(s.data_events) >= 2)
        assert [(c["model"], c["data"]["title"]) for c in alice.changes()] == [
            ("Board", "public"),
            ("Note", "alice's"),
        ]
        refused = await client.get(STREAM + "Board,Vault", headers=ALICE)
        assert refused.status_code in (401, 403)
        assert refused.json()["error"]["statusCode"] == refused.status_code
        anonymous = await client.get(STREAM + "Board,Note")
        assert anonymous.status_code == 401

        async def nothing_registered() -> bool:  # Board was admitted first each time, then given back
            return app.gateway.hub.count == 0

        await eventually(nothing_registered, what="no stream left registered")


async def test_a_stream_ticket_per_model(secured_settings: Callable[..., Settings]) -> None:
    async with (
        serve(secured_settings()) as (url, _app),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        tickets = {}
        for model in ("Note", "Board"):
            reply = await client.post("/auth/stream-ticket", json={"model": model}, headers=ALICE)
            assert reply.status_code == 200
            tickets[model] = reply.json()["ticket"]
        path = f"{STREAM}Note,Board&ticket[Note]={tickets['Note']}&ticket[Board]={tickets['Board']}"
        async with open_stream(client, path) as stream:
            assert stream.response.status_code == 200
            await client.post("/api/Notes", json={"title": "mine"}, headers=ALICE)
            await stream.read_until(lambda s: len(s.data_events) >= 1)
        assert json.loads(stream.data_events[0].data)["model"] == "Note"
        reused = await client.get(path)
        assert reused.status_code == 401  # single-use, as on the per-model endpoints
