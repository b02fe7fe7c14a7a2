"""HEAD wherever GET is served: the GET's status and headers, no body (gateway/rest/head.py)."""

from __future__ import annotations

import asyncio

import httpx


async def test_head_of_a_list_is_the_list_without_its_body(client: httpx.AsyncClient) -> None:
    await client.post("/api/Todos", json=[{"title": "a"}, {"title": "b"}])
    listed = await client.get("/api/Todos")
    head = await client.head("/api/Todos")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(listed.content))
    assert head.headers["x-change-stream-position"] == listed.headers["x-change-stream-position"]


async def test_head_of_health_readiness_and_the_page(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/", "/api/Todos/count", "/api/Todos/findOne"):
        head = await client.head(path)
        assert (head.status_code, head.content) == ((await client.get(path)).status_code, b""), path


async def test_head_by_id_is_still_loopbacks_exists(client: httpx.AsyncClient) -> None:
    created = (await client.post("/api/Todos", json={"title": "seven"})).json()
    found = await client.head(f"/api/Todos/{created['id']}")
    assert (found.status_code, found.headers["content-length"], found.content) == (200, "15", b"")
    assert (await client.head(f"/api/Todos/{created['id'] + 1}")).status_code == 404


async def test_head_where_get_is_not_served_is_still_405_with_allow(client: httpx.AsyncClient) -> None:
    refused = await client.head("/api/Todos/update")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert refused.content == b""


async def test_head_of_a_change_stream_answers_at_once_and_opens_no_stream(client: httpx.AsyncClient) -> None:
    head = await asyncio.wait_for(client.head("/api/Todos/change-stream"), 5)
    assert (head.status_code, head.headers["allow"]) == (405, "GET, POST")
    head = await asyncio.wait_for(client.head("/api/change-stream?models=Todo"), 5)
    assert "text/event-stream" not in head.headers.get("content-type", "")


async def test_a_405_on_a_path_the_document_leaves_out_names_its_methods(client: httpx.AsyncClient) -> None:
    refused = await client.delete("/healthz")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"
