"""`POST /api/<Plural>` served ahead of FastAPI (`gateway.rest.creates`): what it takes, what it passes on,
and that its replies, errors included, are the app's own."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import text
from starlette.types import Receive, Scope, Send

from gateway.config import Settings
from gateway.rest.creates import ModelCreates
from gateway.sse.route import route_path
from tests.conftest import EXAMPLE_MODELS
from tests.rest.conftest import ClientFactory, serve_in_process

NOT_A_CREATE = [
    ("GET", "/api/Todos"),
    ("POST", "/api/Todos/"),
    ("POST", "/api/Todos/replaceOrCreate"),
    ("PUT", "/api/Todos"),
    ("POST", "/api/Unknown"),
    ("POST", "/api"),
]


async def test_only_a_create_at_a_models_own_path_is_taken(database_url: str) -> None:
    passed_on: list[tuple[str, str]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        passed_on.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    settings = Settings(database_url=database_url, models=EXAMPLE_MODELS, broker_url="memory://")
    async with serve_in_process(settings) as (_client, gateway):
        creates = ModelCreates(inner, gateway.apis.values(), rest_root="/api", route_path=route_path)
        transport = httpx.ASGITransport(app=creates)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            created = await client.post("/api/Todos", json={"title": "taken"})
            assert created.status_code == 200
            assert created.json()["title"] == "taken"
            for method, path in NOT_A_CREATE:
                assert (await client.request(method, path)).status_code == 204
    assert passed_on == NOT_A_CREATE


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        (b"{not json", 400, "SyntaxError"),
        (b"[1, 2]", 400, "Error"),
        (b'"a string"', 400, "Error"),
        (b"{}", 422, "ValidationError"),
    ],
)
async def test_client_errors_come_in_loopbacks_envelope(
    gateway_factory: ClientFactory, body: bytes, status: int, name: str
) -> None:
    async with gateway_factory() as client:
        reply = await client.post("/api/Todos", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.json()["error"]["statusCode"] == status
    assert reply.json()["error"]["name"] == name


async def test_a_database_fault_is_a_logged_500_without_detail(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=database_url, models=EXAMPLE_MODELS, broker_url="memory://")
    async with serve_in_process(settings) as (client, gateway):
        async with gateway.engine.begin() as connection:
            await connection.execute(text("DROP TABLE todo"))
        with caplog.at_level(logging.ERROR, logger="gateway.rest"):
            reply = await client.post("/api/Todos", json={"title": "lost"})
    assert reply.status_code == 500
    assert reply.json() == {"error": {"statusCode": 500, "message": "Internal Server Error"}}
    assert "unhandled error on POST /api/Todos" in caplog.text
