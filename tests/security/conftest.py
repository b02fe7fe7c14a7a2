"""Fixtures for the security tests: signed tokens, models with LoopBack ACLs, gateways with auth on."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.app import Gateway
from gateway.config import Settings
from tests.rest.conftest import serve_in_process

SECRET = "s3cret-" + "k" * 64
"""An HS256 key long enough for RFC 7518 (and PyJWT's key-length warning)."""

NOTE = {
    "name": "Note",
    "properties": {
        "title": {"type": "string", "required": True},
        "ownerId": {"type": "string"},
    },
    "acls": [
        {"accessType": "*", "principalType": "ROLE", "principalId": "$everyone", "permission": "DENY"},
        {
            "accessType": "EXECUTE",
            "principalType": "ROLE",
            "principalId": "$authenticated",
            "permission": "ALLOW",
            "property": "create",
        },
        {"accessType": "*", "principalType": "ROLE", "principalId": "$owner", "permission": "ALLOW"},
        {"accessType": "*", "principalType": "ROLE", "principalId": "admin", "permission": "ALLOW"},
    ],
}
"""Private notes: anyone signed in may create; only the owner (or an admin) may read or change one."""

BOARD = {
    "name": "Board",
    "properties": {"title": {"type": "string", "required": True}},
    "acls": [
        {"accessType": "*", "principalType": "ROLE", "principalId": "$everyone", "permission": "DENY"},
        {"accessType": "READ", "principalType": "ROLE", "principalId": "$everyone", "permission": "ALLOW"},
        {"accessType": "WRITE", "principalType": "ROLE", "principalId": "editor", "permission": "ALLOW"},
    ],
}
"""A public board: everyone reads, only editors write."""

VAULT = {
    "name": "Vault",
    "properties": {"title": {"type": "string"}},
    "acls": [
        {"accessType": "*", "principalType": "ROLE", "principalId": "$everyone", "permission": "DENY"},
        {"accessType": "*", "principalType": "ROLE", "principalId": "admin", "permission": "ALLOW"},
    ],
}
"""Admins only."""

TokenFactory = Callable[..., str]


def make_token(
    sub: str | None = "alice",
    *,
    roles: list[str] | None = None,
    ttl: float = 3600,
    key: Any = SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    now = time.time()
    payload: dict[str, Any] = {"iat": int(now), "exp": now + ttl, **claims}
    if sub is not None:
        payload["sub"] = sub
    if roles is not None:
        payload["roles"] = roles
    return jwt.encode(payload, key, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    for definition in (NOTE, BOARD, VAULT):
        (directory / f"{definition['name'].lower()}.json").write_text(json.dumps(definition))
    return directory


@pytest.fixture
def secured_settings(tmp_path: Path, models: Path) -> Callable[..., Settings]:
    """Settings with HS256 auth on, the ACL'd models, and a fresh SQLite database."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / uuid.uuid4().hex[:8]}.db",
            "models": models,
            "auth_jwt_secret": SECRET,
            "heartbeat": 0.5,
            "bookmark_interval": 0.5,
            "drain_seconds": 0.1,
            **overrides,
        }
        return Settings(**values)

    return build


GatewayFactory = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Gateway]]]


@pytest.fixture
def secured(secured_settings: Callable[..., Settings]) -> GatewayFactory:
    """An in-process gateway (ASGI client) with auth on; REST only (ASGI transport cannot stream)."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
        async with serve_in_process(secured_settings(**overrides)) as (client, gateway):
            yield client, gateway

    return start
