"""Authentication, ACLs and `$owner` scopes on the REST routes (in-process gateway, SQLite)."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from gateway.models.loader import parse_model
from gateway.security.scope import OwnerSetupError, check_owner_property
from tests.rest.conftest import serve_in_process
from tests.security.conftest import GatewayFactory, bearer, make_token

ALICE = bearer(make_token("alice"))
BOB = bearer(make_token("bob"))
ADMIN = bearer(make_token("root", roles=["admin"]))
EDITOR = bearer(make_token("ed", roles=["editor"]))


def error(reply: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = reply.json()["error"]
    return body


async def test_anonymous_and_unauthorised_requests_get_loopbacks_401_and_a_403(
    secured: GatewayFactory,
) -> None:
    async with secured() as (client, _):
        reply = await client.get("/api/Notes")
        assert reply.status_code == 401
        assert error(reply) == {
            "statusCode": 401,
            "name": "Error",
            "message": "Authorization Required",
            "code": "AUTHORIZATION_REQUIRED",
        }
        assert (await client.get("/api/Boards")).status_code == 200
        assert (await client.post("/api/Boards", json={"title": "x"})).status_code == 401
        reply = await client.post("/api/Boards", json={"title": "x"}, headers=ALICE)
        assert reply.status_code == 403
        assert error(reply)["code"] == "ACCESS_DENIED"
        assert (await client.post("/api/Boards", json={"title": "x"}, headers=EDITOR)).status_code == 200
        assert (await client.get("/api/Vaults", headers=ALICE)).status_code == 403
        assert (await client.get("/api/Vaults/count", headers=ADMIN)).json() == {"count": 0}


async def test_a_denied_request_learns_nothing_from_its_filter(secured: GatewayFactory) -> None:
    async with secured() as (client, _):
        reply = await client.get("/api/Vaults", params={"filter": '{"where": {"secretColumn": 1}}'})
        assert reply.status_code == 401  # not the 400 that would name the model's properties


async def seed(client: httpx.AsyncClient) -> dict[str, Any]:
    alice_1 = (await client.post("/api/Notes", json={"title": "a1"}, headers=ALICE)).json()
    alice_2 = (await client.post("/api/Notes", json={"title": "a2", "ownerId": "bob"}, headers=ALICE)).json()
    bob_1 = (await client.post("/api/Notes", json=[{"title": "b1", "ownerId": "alice"}], headers=BOB)).json()[
        0
    ]
    return {"alice": [alice_1, alice_2], "bob": bob_1}


async def test_owner_scopes_every_read(secured: GatewayFactory) -> None:
    async with secured() as (client, _):
        rows = await seed(client)
        assert [n["ownerId"] for n in rows["alice"]] == ["alice", "alice"]  # forced, whatever the body said
        assert rows["bob"]["ownerId"] == "bob"
        bob_id = rows["bob"]["id"]

        assert [n["title"] for n in (await client.get("/api/Notes", headers=ALICE)).json()] == ["a1", "a2"]
        assert [n["title"] for n in (await client.get("/api/Notes", headers=BOB)).json()] == ["b1"]
        assert len((await client.get("/api/Notes", headers=ADMIN)).json()) == 3
        everything = {"filter": '{"where": {"or": [{"ownerId": "bob"}, {"ownerId": "alice"}]}}'}
        assert len((await client.get("/api/Notes", params=everything, headers=ALICE)).json()) == 2
        assert (await client.get("/api/Notes/count", headers=ALICE)).json() == {"count": 2}
        assert (
            await client.get("/api/Notes/count", params={"where": '{"title": "b1"}'}, headers=ALICE)
        ).json() == {"count": 0}
        one = await client.get(
            "/api/Notes/findOne", params={"filter": '{"where": {"title": "b1"}}'}, headers=ALICE
        )
        assert one.status_code == 404
        assert (await client.get(f"/api/Notes/{bob_id}", headers=ALICE)).status_code == 404
        assert (await client.get(f"/api/Notes/{bob_id}", headers=BOB)).json()["title"] == "b1"
        assert (await client.get(f"/api/Notes/{bob_id}/exists", headers=ALICE)).json() == {"exists": False}
        assert (await client.get(f"/api/Notes/{bob_id}/exists", headers=BOB)).json() == {"exists": True}
        assert (await client.head(f"/api/Notes/{bob_id}", headers=ALICE)).status_code == 404
        assert (await client.head(f"/api/Notes/{bob_id}", headers=BOB)).status_code == 200


async def test_owner_guards_every_write(secured: GatewayFactory) -> None:
    async with secured() as (client, _):
        rows = await seed(client)
        bob_id, alice_id = rows["bob"]["id"], rows["alice"][0]["id"]
        assert (
            await client.patch(f"/api/Notes/{bob_id}", json={"title": "x"}, headers=ALICE)
        ).status_code == 404
        assert (
            await client.put(f"/api/Notes/{bob_id}", json={"title": "x"}, headers=ALICE)
        ).status_code == 404
        replace = await client.post(f"/api/Notes/{bob_id}/replace", json={"title": "x"}, headers=ALICE)
        assert replace.status_code == 404
        upsert = await client.patch("/api/Notes", json={"id": bob_id, "title": "x"}, headers=ALICE)
        assert upsert.status_code == 404
        assert (await client.delete(f"/api/Notes/{bob_id}", headers=ALICE)).json() == {"count": 0}
        updated = await client.post(
            "/api/Notes/update", params={"where": "{}"}, json={"title": "all"}, headers=ALICE
        )
        assert updated.json() == {"count": 2}
        made = await client.post(
            "/api/Notes/upsertWithWhere",
            params={"where": '{"title": "b1"}'},
            json={"title": "b1"},
            headers=ALICE,
        )
        assert made.json()["ownerId"] == "alice"
        assert made.json()["id"] not in (bob_id, alice_id)
        assert (await client.get(f"/api/Notes/{bob_id}", headers=BOB)).json() == {**rows["bob"]}
        # The owner cannot give a row away, by patch or by replace.
        given = await client.patch(f"/api/Notes/{alice_id}", json={"ownerId": "bob"}, headers=ALICE)
        assert given.json()["ownerId"] == "alice"
        replaced = await client.put(f"/api/Notes/{alice_id}", json={"title": "r"}, headers=ALICE)
        assert replaced.json() == {"title": "r", "ownerId": "alice", "id": alice_id}
        assert (await client.delete(f"/api/Notes/{alice_id}", headers=ALICE)).json() == {"count": 1}
        assert (await client.delete(f"/api/Notes/{bob_id}", headers=ADMIN)).json() == {"count": 1}


async def test_auth_off_is_open_and_says_so_loudly(
    secured: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        async with secured(auth_jwt_secret=None) as (client, _):
            assert (await client.post("/api/Vaults", json={"title": "v"})).status_code == 200
            assert (await client.get("/api/Vaults")).status_code == 200
            # A token is not even looked at.
            assert (
                await client.get("/api/Vaults", headers={"Authorization": "Bearer junk"})
            ).status_code == 200
    assert "AUTHENTICATION IS OFF" in caplog.text


async def test_the_query_token_is_off_by_default(secured: GatewayFactory) -> None:
    token = {"access_token": make_token("alice")}
    async with secured() as (client, _):
        assert (await client.get("/api/Notes", params=token)).status_code == 401
    async with secured(auth_allow_query_token=True) as (client, _):
        assert (await client.get("/api/Notes", params=token)).status_code == 200
        expired = {"access_token": make_token("alice", ttl=-100)}
        assert error(await client.get("/api/Notes", params=expired))["code"] == "INVALID_TOKEN"


async def test_the_session_cookie(secured: GatewayFactory) -> None:
    token = make_token("alice")
    async with secured() as (client, _):
        session = await client.post("/auth/session", headers=bearer(token))
        assert session.status_code == 200
        assert 3590 <= session.json()["expiresIn"] <= 3600
        cookie = session.headers["set-cookie"]
        assert cookie.startswith(f"gateway_token={token};")
        for attribute in ("HttpOnly", "Path=/api", "SameSite=lax", "Secure", "Max-Age="):
            assert attribute in cookie
        assert session.headers["cache-control"] == "no-store"
        assert (await client.post("/auth/session")).status_code == 401
        assert (await client.post("/auth/session", headers=bearer("junk"))).status_code == 401

        jar = {"Cookie": f"gateway_token={token}"}
        await client.post("/api/Notes", json={"title": "mine"}, headers=bearer(token))
        assert [n["title"] for n in (await client.get("/api/Notes", headers=jar)).json()] == ["mine"]
        # A cookie never authorises a write: no cross-site request can use it.
        assert (await client.post("/api/Notes", json={"title": "csrf"}, headers=jar)).status_code == 401
        bad = await client.get("/api/Notes", headers={"Cookie": "gateway_token=junk"})
        assert error(bad)["code"] == "INVALID_TOKEN"
        gone = await client.delete("/auth/session")
        assert gone.status_code == 204
        assert 'gateway_token=""' in gone.headers["set-cookie"] or "Max-Age=0" in gone.headers["set-cookie"]
    async with secured(auth_cookie_secure=False, auth_cookie_name="sid") as (client, _):
        cookie = (await client.post("/auth/session", headers=bearer(token))).headers["set-cookie"]
        assert cookie.startswith("sid=")
        assert "Secure" not in cookie


async def test_security_headers_on_every_response(secured: GatewayFactory) -> None:
    async with secured() as (client, _):
        for reply in (
            await client.get("/api/Boards"),
            await client.get("/api/Notes"),
            await client.get("/healthz"),
        ):
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["referrer-policy"] == "no-referrer"
            assert reply.headers["x-frame-options"] == "DENY"
            assert reply.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "content-security-policy" not in (await client.get("/docs")).headers


async def test_cors_gives_credentials_to_listed_origins_only(secured: GatewayFactory) -> None:
    async with secured(cors_origins=["https://app.example"]) as (client, _):
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        ok = await client.options("/api/Notes", headers={"Origin": "https://app.example", **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert ok.headers["access-control-allow-credentials"] == "true"
        evil = await client.options("/api/Notes", headers={"Origin": "https://evil.example", **preflight})
        assert evil.status_code == 400
        assert "access-control-allow-origin" not in evil.headers
        simple = await client.get("/api/Boards", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
        listed = await client.get("/api/Boards", headers={"Origin": "https://app.example"})
        assert "x-change-stream-position" in listed.headers["access-control-expose-headers"].lower()
    async with secured(cors_origins=["*"]) as (client, _):
        reply = await client.get("/api/Boards", headers={"Origin": "https://evil.example"})
        assert reply.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in reply.headers


async def test_limits_return_413_and_429_and_affect_nothing_else(secured: GatewayFactory) -> None:
    async with secured(limit_body_bytes=2048, limit_writes_per_second=3) as (client, _):
        big = {"title": "x" * 4096}
        reply = await client.post("/api/Boards", json=big, headers=EDITOR)
        assert reply.status_code == 413
        assert error(reply)["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks() -> Any:
            yield b'{"title": "'
            for _ in range(10):
                yield b"y" * 512
            yield b'"}'

        chunked = await client.post("/api/Boards", content=chunks(), headers=EDITOR)
        assert chunked.status_code == 413
        statuses = [
            (await client.post("/api/Boards", json={"title": f"t{n}"}, headers=EDITOR)).status_code
            for n in range(8)
        ]
        assert statuses.count(200) >= 1
        limited = [s for s in statuses if s != 200]
        assert limited
        assert set(limited) == {429}
        reply = await client.post("/api/Boards", json={"title": "again"}, headers=EDITOR)
        if reply.status_code == 429:
            assert reply.headers["retry-after"] == "1"
            assert error(reply)["code"] == "TOO_MANY_REQUESTS"
        # Reads and other principals are not affected.
        assert (await client.get("/api/Boards")).status_code == 200
        other = bearer(make_token("ed2", roles=["editor"]))
        assert (await client.post("/api/Boards", json={"title": "other"}, headers=other)).status_code == 200


async def test_stream_tickets_are_issued_only_to_principals_that_may_stream(secured: GatewayFactory) -> None:
    async with secured(limit_tickets_per_minute=2) as (client, _):
        assert (await client.post("/auth/stream-ticket", json={"model": "Note"})).status_code == 401
        assert (
            await client.post("/auth/stream-ticket", json={"model": "Nope"}, headers=ALICE)
        ).status_code == 404
        assert (await client.post("/auth/stream-ticket", json={}, headers=ALICE)).status_code == 400
        assert (
            await client.post("/auth/stream-ticket", json={"model": "Vault"}, headers=ALICE)
        ).status_code == 403
        issued = await client.post("/auth/stream-ticket", params={"model": "Notes"}, headers=ALICE)
        assert issued.status_code == 200
        assert set(issued.json()) == {"ticket", "expiresIn"}
        assert issued.json()["expiresIn"] == 60
        assert issued.headers["cache-control"] == "no-store"
        # Two a minute: of four more, at least one is refused, even across a minute boundary.
        more = [
            await client.post("/auth/stream-ticket", json={"model": "Note"}, headers=ALICE) for _ in range(4)
        ]
        limited = next(reply for reply in more if reply.status_code != 200)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert (
            await client.post("/auth/stream-ticket", json={"model": "Note"}, headers=BOB)
        ).status_code == 200


async def test_owner_rules_need_a_declared_owner_property(secured_settings: Any, tmp_path: Any) -> None:
    models = tmp_path / "bad"
    models.mkdir()
    (models / "m.json").write_text(
        '{"name": "M", "properties": {}, "acls": [{"principalType": "ROLE", "principalId": "$owner"}]}'
    )
    settings: Settings = secured_settings(models=models)
    with pytest.raises(ValueError, match="model M: its acls use \\$owner"):
        async with serve_in_process(settings):
            pass


@pytest.mark.parametrize(
    ("properties", "options", "problem"),
    [
        ({}, {}, "must declare the owner property 'ownerId'"),
        ({"ownerId": {"type": "object"}}, {}, "must be a string or number"),
        ({"ownerId": {"type": "string"}}, {"hidden": ["ownerId"]}, "must not be hidden"),
        ({"userId": {"type": "number"}}, {}, "must declare the owner property 'ownerId'"),
    ],
)
def test_owner_property_problems_are_named(properties: Any, options: Any, problem: str) -> None:
    definition = {
        "name": "M",
        "properties": properties,
        "options": options,
        "acls": [{"principalType": "ROLE", "principalId": "$owner", "permission": "ALLOW"}],
    }
    with pytest.raises(OwnerSetupError, match=re.escape(problem)):
        check_owner_property(parse_model("m.json", definition))
    ok = {**definition, "properties": {"userId": {"type": "number"}}, "options": {"ownerProperty": "userId"}}
    check_owner_property(parse_model("m.json", ok))
