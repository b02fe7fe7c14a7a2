"""Hostile input, on SQLite and PostgreSQL: every attack is a clear 4xx, fast, and leaves nothing behind.

Each attack was a 500 (or worse) once: filters nested or spread past what the parsers, the encoder or
SQLite can take, numbers of thousands of digits, NUL characters that PostgreSQL cannot store, requests
that make one worker hold too much. After each one the worker must still answer its health check at once,
and the rows written before must be exactly as they were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from gateway.config import Settings
from gateway.jsonshape import BODY_MAX_DEPTH, FILTER_MAX_DEPTH, FILTER_MAX_NODES
from tests.conftest import EXAMPLE_MODELS
from tests.rest.conftest import ClientFactory, serve_in_process
from tests.sse.helpers import serve


def nested(depth: int, leaf: Any, key: str | None = None) -> Any:
    """`leaf` inside `depth` arrays (or objects under `key`), built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if key is None else {key: value}
    return value


def nested_where(depth: int) -> str:
    """A where clause of `depth` nested `and`s, as JSON text (the stdlib encoder recurses too deep)."""
    return '{"and":[' * depth + '{"title":"x"}' + "]}" * depth


def deep_array(depth: int, leaf: str) -> str:
    """JSON text of `leaf` inside `depth` arrays (the stdlib encoder recurses too deep for these)."""
    return "[" * depth + json.dumps(leaf) + "]" * depth


def deep_text(depth: int, key: str, leaf: str) -> str:
    """JSON text of `leaf` inside `depth` objects with one key each."""
    return f'{{"{key}":' * depth + leaf + "}" * depth


Attack = tuple[str, str, dict[str, Any], int]
ATTACKS: dict[str, Attack] = {
    "where-nested-600": ("GET", "/api/Todos/count", {"params": {"where": nested_where(600)}}, 400),
    "filter-where-nested-600": (
        "GET",
        "/api/Todos",
        {"params": {"filter": '{"where":' + nested_where(600) + "}"}},
        400,
    ),
    "where-nested-just-over": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": nested_where(FILTER_MAX_DEPTH // 2)}},
        400,
    ),
    "value-nested-10000": (
        "GET",
        "/api/Todos",
        {"params": {"filter": '{"where":{"title":' + deep_array(10_000, "x") + "}}"}},
        400,
    ),
    "include-nested-900": (
        "GET",
        "/api/Todos",
        {"params": {"filter": '{"include":' + deep_text(900, "rel", '"x"') + "}"}},
        400,
    ),
    "and-of-1000": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": json.dumps({"and": [{"title": f"t{n}"} for n in range(1000)]})}},
        400,
    ),
    "or-of-1000": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": json.dumps({"or": [{"priority": n} for n in range(1000)]})}},
        400,
    ),
    "inq-past-the-node-limit": (
        "POST",
        "/api/Todos/change-stream",
        {"json": {"options": {"where": {"priority": {"inq": list(range(FILTER_MAX_NODES + 1))}}}}},
        400,
    ),
    "stream-options-nested-600": (
        "GET",
        "/api/Todos/change-stream",
        {"params": {"options": '{"where":' + nested_where(600) + "}"}},
        400,
    ),
    "undeclared-property-nested-300": (
        "POST",
        "/api/Todos",
        {
            "content": '{"title":"deep","extra":' + deep_text(300, "k", "1") + "}",
            "headers": {"content-type": "application/json"},
        },
        400,
    ),
    "body-just-over-the-depth": (
        "POST",
        "/api/Todos",
        {"json": {"title": "deep", "extra": nested(BODY_MAX_DEPTH, 1)}},
        400,
    ),
    "path-id-of-5000-digits": ("GET", "/api/Todos/" + "9" * 5000, {}, 404),
    "path-id-of-5000-digits-exists": ("GET", "/api/Todos/" + "9" * 5000 + "/exists", {}, 200),
    "patch-id-of-5000-digits": ("PATCH", "/api/Todos/" + "9" * 5000, {"json": {"done": True}}, 404),
    "limit-of-5000-digits": ("GET", "/api/Todos", {"params": {"filter[limit]": "9" * 5000}}, 400),
    "where-id-of-5000-digits": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": '{"id":"' + "9" * 5000 + '"}'}},
        400,
    ),
    "where-number-of-5000-digits": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": '{"priority":' + "9" * 5000 + "}"}},
        400,
    ),
    "where-string-given-an-integer-of-400-digits": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": '{"title":1' + "0" * 400 + "}"}},
        400,
    ),
    "inq-of-an-integer-of-400-digits": (
        "GET",
        "/api/Todos",
        {"params": {"filter": '{"where":{"title":{"inq":[1' + "0" * 400 + "]}}}"}},
        400,
    ),
    "lone-surrogate-in-a-filter-value": (
        "GET",
        "/api/Todos",
        {"params": {"filter": '{"where":{"title":"\\ud800"}}'}},
        400,
    ),
    "lone-surrogate-in-a-property-name": (
        "GET",
        "/api/Todos/count",
        {"params": {"where": '{"\\udfff":1}'}},
        400,
    ),
    "lone-surrogate-in-stream-options": (
        "GET",
        "/api/Todos/change-stream",
        {"params": {"options": '{"where":{"title":"\\ud800"}}'}},
        400,
    ),
    "order-of-3000-terms": (
        "GET",
        "/api/Todos",
        {"params": {"filter": json.dumps({"order": "id," * 3000})}},
        400,
    ),
    "body-number-of-5000-digits": (
        "POST",
        "/api/Todos",
        {
            "content": '{"title":"n","priority":' + "9" * 5000 + "}",
            "headers": {"content-type": "application/json"},
        },
        400,
    ),
    "nul-in-a-string-property": ("POST", "/api/Todos", {"json": {"title": "a\x00b"}}, 422),
    "nul-in-a-patch": ("PATCH", "/api/Todos/1", {"json": {"title": "\x00"}}, 422),
    "nul-in-an-undeclared-property": ("POST", "/api/Todos", {"json": {"title": "a", "note": ["\x00"]}}, 422),
    "nul-in-an-undeclared-key": ("POST", "/api/Todos", {"json": {"title": "a", "n\x00": 1}}, 422),
    "nul-in-an-array-create": ("POST", "/api/Todos", {"json": [{"title": "ok"}, {"title": "\x00"}]}, 422),
    "nul-in-a-filter": ("GET", "/api/Todos/count", {"params": {"where": json.dumps({"title": "\x00"})}}, 400),
    "too-many-rows-in-one-create": (
        "POST",
        "/api/Todos",
        {"json": [{"title": f"r{n}"} for n in range(1001)]},
        400,
    ),
    "limit-above-the-page-size": ("GET", "/api/Todos", {"params": {"filter[limit]": "10001"}}, 400),
}


async def _health_seconds(client: httpx.AsyncClient) -> float:
    """The median of three health checks (one slow scheduling slice on a busy box is not the worker)."""
    durations = []
    for _ in range(3):
        started = time.perf_counter()
        assert (await client.get("/healthz")).status_code == 200
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Three rows written before the attacks."""
    created = await client.post(
        "/api/Todos", json=[{"title": "one"}, {"title": "two", "priority": 2}, {"title": "three"}]
    )
    assert created.status_code == 200
    return list(created.json())


@pytest.mark.parametrize("name", ATTACKS)
async def test_an_attack_is_a_quick_client_error_that_changes_nothing(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]], name: str
) -> None:
    method, path, options, status = ATTACKS[name]
    started = time.perf_counter()
    reply = await client.request(method, path, **options)
    took = time.perf_counter() - started
    print(f"{name}: {reply.status_code} in {took * 1000:.1f} ms")
    assert reply.status_code == status, reply.text[:500]
    if status >= 400:
        error = reply.json()["error"]
        assert error["statusCode"] == status
        assert error["message"]
    assert await _health_seconds(client) < 0.1
    assert (await client.get("/api/Todos")).json() == seeded


async def test_a_list_longer_than_the_page_size_is_refused_not_cut(gateway_factory: ClientFactory) -> None:
    async with gateway_factory(max_page_size=3) as client:
        assert (
            await client.post("/api/Todos", json=[{"title": f"r{n}"} for n in range(3)])
        ).status_code == 200
        assert len((await client.get("/api/Todos")).json()) == 3
        await client.post("/api/Todos", json={"title": "one too many"})
        refused = await client.get("/api/Todos")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "PAGE_TOO_LARGE"
        pages = [
            await client.get("/api/Todos", params={"filter": json.dumps({"limit": 3, "skip": s})})
            for s in (0, 3)
        ]
        assert [len(page.json()) for page in pages] == [3, 1]
        assert (await client.get("/api/Todos", params={"filter[limit]": "4"})).status_code == 400


async def test_a_list_longer_than_the_page_size_is_refused_before_its_rows_are_read(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, models=EXAMPLE_MODELS, max_page_size=3)
    async with serve_in_process(settings) as (client, gateway):
        await client.post("/api/Todos", json=[{"title": f"r{n}"} for n in range(4)])
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(gateway.engine.sync_engine, "before_cursor_execute", record)
        try:
            refused = await client.get("/api/Todos")
        finally:
            event.remove(gateway.engine.sync_engine, "before_cursor_execute", record)
        assert refused.json()["error"]["code"] == "PAGE_TOO_LARGE"
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert reads, statements
        assert not [s for s in reads if "title" in s], reads  # only the id past the page was probed


async def test_without_a_page_size_a_list_is_as_long_as_loopback_makes_it(
    gateway_factory: ClientFactory,
) -> None:
    async with gateway_factory(max_page_size=0) as client:
        await client.post("/api/Todos", json=[{"title": f"r{n}"} for n in range(30)])
        assert len((await client.get("/api/Todos")).json()) == 30


@pytest.mark.parametrize("path", ["/api/Todos", "/api/Todos/change-stream"])
async def test_a_client_that_leaves_mid_body_is_no_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", models=EXAMPLE_MODELS)
    async with serve(settings) as (url, app):
        port = int(url.rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        writer.write(head.encode() + b'{"title": "never fin')
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        registry = app.gateway.metrics.registry

        def answered() -> float:
            return sum(
                sample.value
                for metric in registry.collect()
                if metric.name == "gateway_http_requests"
                for sample in metric.samples
                if sample.name.endswith("_total")
            )

        async with asyncio.timeout(20):
            while not answered():
                await asyncio.sleep(0.02)
        statuses = {
            sample.labels["status"]
            for metric in registry.collect()
            if metric.name == "gateway_http_requests"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        assert statuses == {"400"}
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
