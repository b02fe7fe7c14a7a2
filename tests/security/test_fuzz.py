"""Random and malformed credentials against every kind of route: never a 5xx, never access the ACLs deny."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.config import Settings
from tests.rest.conftest import serve_in_process
from tests.security.conftest import bearer, make_token


@dataclass(frozen=True)
class Credential:
    text: str
    sub: str | None = None  # set only when `text` is a token the gateway must accept
    roles: tuple[str, ...] = ()


ROLE_NAMES = st.sampled_from(["admin", "editor", "user", "$owner", "$everyone", "$authenticated", ""])
TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=5,
)


@st.composite
def valid(draw: st.DrawFn) -> Credential:
    sub = draw(st.sampled_from(["alice", "bob", "root", "carol"]))
    roles = tuple(draw(st.lists(ROLE_NAMES, max_size=3)))
    return Credential(make_token(sub, roles=list(roles)), sub, tuple(r for r in roles if r and r[0] != "$"))


@st.composite
def odd_claims(draw: st.DrawFn) -> Credential:
    claims = {"sub": draw(ANY_JSON), "exp": draw(ANY_JSON), "roles": draw(ANY_JSON), "nbf": draw(ANY_JSON)}
    claims = {k: v for k, v in claims.items() if draw(st.booleans())}
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    header = draw(
        st.sampled_from(["eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJub25lIn0", "e30", "eyJhbGciOiJSUzI1NiJ9"])
    )
    return Credential(f"{header}.{part}.{draw(TEXT)}")


def signed_wrongly(draw: st.DrawFn) -> Credential:
    return Credential(make_token(draw(st.sampled_from(["root", "alice"])), roles=["admin"], key="k" * 64))


CREDENTIAL = st.one_of(
    valid(),
    valid(),
    valid(),
    odd_claims(),
    st.builds(lambda t: Credential(t), TEXT),
    st.composite(signed_wrongly)(),
    st.builds(lambda: Credential(make_token("root", roles=["admin"], ttl=-100))),
    st.builds(lambda: Credential(make_token("root", roles=["admin"], algorithm="HS512"))),
)

ROUTES = [
    ("GET", "/api/Notes"),
    ("GET", "/api/Notes/1"),
    ("GET", "/api/Notes/count"),
    ("GET", "/api/Notes/2/exists"),
    ("PATCH", "/api/Notes/1"),
    ("DELETE", "/api/Notes/999"),
    ("POST", "/api/Notes/update?where={}"),
    ("GET", "/api/Vaults"),
    ("POST", "/api/Vaults"),
    ("GET", "/api/Boards"),
    ("POST", "/api/Boards"),
    ("POST", "/auth/stream-ticket"),
    ("POST", "/auth/session"),
]


@dataclass
class Running:
    run: Callable[[Any], Any]
    client: httpx.AsyncClient


@pytest.fixture
def running(secured_settings: Callable[..., Settings]) -> Iterator[Running]:
    """One gateway for the whole run, on an event loop of its own (hypothesis drives a sync test)."""
    with asyncio.Runner() as runner:
        context = serve_in_process(secured_settings())
        client, _ = runner.run(context.__aenter__())
        runner.run(client.post("/api/Notes", json={"title": "a"}, headers=bearer(make_token("alice"))))
        runner.run(client.post("/api/Notes", json={"title": "b"}, headers=bearer(make_token("bob"))))
        runner.run(
            client.post("/api/Vaults", json={"title": "v"}, headers=bearer(make_token("r", roles=["admin"])))
        )
        try:
            yield Running(runner.run, client)
        finally:
            runner.run(context.__aexit__(None, None, None))


def effective(method: str, header: Credential | None, cookie: Credential | None) -> Credential | None:
    """Whose request the gateway must see it as (None: anonymous or refused)."""
    if header is not None:
        return header if header.sub is not None else None
    if cookie is not None and method in ("GET", "HEAD"):
        return cookie if cookie.sub is not None else None
    return None  # the query token is off by default


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    header=st.none() | CREDENTIAL,
    scheme=st.sampled_from(["Bearer "] * 6 + ["bearer ", "Basic ", "", "Bearer  "]),
    cookie=st.none() | CREDENTIAL,
    query=st.none() | CREDENTIAL,
    body=st.sampled_from([{"title": "t", "ownerId": "bob"}, {"model": "Vault"}, {"model": "Note"}, {}]),
)
def test_fuzzed_credentials(
    running: Running,
    route: tuple[str, str],
    header: Credential | None,
    scheme: str,
    cookie: Credential | None,
    query: Credential | None,
    body: dict[str, Any],
) -> None:
    method, path = route
    headers = {}
    if header is not None:
        headers["Authorization"] = scheme + header.text
        if scheme.strip().lower() != "bearer" or not header.text:
            header = Credential("refused")
    if cookie is not None:
        headers["Cookie"] = f"gateway_token={cookie.text}"
        if not cookie.text or any(c in cookie.text for c in ';," \\'):
            cookie = Credential("unparsed")
    params = {} if query is None else {"access_token": query.text}
    reply = running.run(running.client.request(method, path, headers=headers, params=params, json=body))
    assert reply.status_code < 500, reply.text
    event(f"{reply.status_code} {method} {path}")
    if reply.status_code >= 400:
        assert set(reply.json()["error"]) >= {"statusCode", "name", "message"}
        return
    who = effective(method, header, cookie)
    model = path.split("/")[2] if path.startswith("/api/") else ""
    if path.startswith("/auth/"):
        assert who is not None
        assert header is not None
        if path == "/auth/stream-ticket" and body.get("model") == "Vault":
            assert "admin" in who.roles
    elif model == "Vaults":
        assert who is not None
        assert "admin" in who.roles
    elif model == "Boards" and method != "GET":
        assert who is not None
        assert "editor" in who.roles
    elif model == "Notes":
        assert who is not None
        if "admin" not in who.roles:
            payload = reply.json()
            rows = payload if isinstance(payload, list) else [payload] if "ownerId" in payload else []
            assert all(row["ownerId"] == who.sub for row in rows)
