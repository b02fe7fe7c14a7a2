"""Relation routes with LoopBack 3's replies, recorded from LoopBack 3.28 (memory connector) with these models.

The expected replies below are what LB3 answered to the same requests in the same order (the recorder was a
scratch script; see the module docstring of gateway/rest/relation_routes.py for the rules they show).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.rest.conftest import ClientFactory
from tests.sse.helpers import open_stream, serve

MODELS: list[dict[str, Any]] = [
    {
        "name": "Author",
        "properties": {"name": "string"},
        "relations": {
            "books": {"type": "hasMany", "model": "Book"},
            "profile": {"type": "hasOne", "model": "Profile"},
        },
    },
    {"name": "Profile", "properties": {"bio": "string"}},
    {
        "name": "Book",
        "properties": {"title": "string"},
        "relations": {
            "author": {"type": "belongsTo", "model": "Author"},
            "readers": {"type": "hasMany", "model": "Reader", "through": "Loan"},
        },
    },
    {"name": "Reader", "properties": {"name": "string"}},
    {
        "name": "Loan",
        "properties": {},
        "relations": {
            "book": {"type": "belongsTo", "model": "Book"},
            "reader": {"type": "belongsTo", "model": "Reader"},
        },
    },
]

NOT_BOOK_99 = {
    "error": {"statusCode": 404, "name": "Error", "message": "No instance with id 99 found for Book"}
}
NO_AUTHOR_99 = {
    "error": {
        "statusCode": 404,
        "name": "Error",
        "message": "could not find a model with id 99",
        "code": "MODEL_NOT_FOUND",
    }
}
NO_PROFILE = {
    "error": {
        "statusCode": 404,
        "name": "Error",
        "message": 'No "Profile" instance(s) found',
        "code": "MODEL_NOT_FOUND",
    }
}
SESSION: list[tuple[str, str, Any, int, Any]] = [
    ("POST", "/Authors", {"name": "Ann"}, 200, {"name": "Ann", "id": 1}),
    ("POST", "/Books", {"title": "NoAuthor"}, 200, {"title": "NoAuthor", "id": 1}),
    ("GET", "/Books/1/author", None, 200, {}),
    ("POST", "/Authors/1/books", {"title": "A1"}, 200, {"title": "A1", "id": 2, "authorId": 1}),
    (
        "POST",
        "/Authors/1/books",
        {"title": "A2", "authorId": 5},
        200,
        {"title": "A2", "id": 3, "authorId": 1},
    ),
    (
        "GET",
        "/Authors/1/books",
        None,
        200,
        [{"title": "A1", "id": 2, "authorId": 1}, {"title": "A2", "id": 3, "authorId": 1}],
    ),
    ("GET", "/Authors/1/books/count", None, 200, {"count": 2}),
    ("GET", "/Authors/1/books/2", None, 200, {"title": "A1", "id": 2, "authorId": 1}),
    (
        "GET",
        "/Authors/1/books/1",
        None,
        404,
        {"error": {"statusCode": 404, "name": "Error", "message": "No instance with id 1 found for Book"}},
    ),
    ("GET", "/Authors/1/books/99", None, 404, NOT_BOOK_99),
    ("PUT", "/Authors/1/books/2", {"title": "A1b"}, 200, {"title": "A1b", "id": 2, "authorId": 1}),
    ("PUT", "/Authors/1/books/99", {"title": "x"}, 404, NOT_BOOK_99),
    ("GET", "/Authors/99/books", None, 404, NO_AUTHOR_99),
    ("POST", "/Authors/99/books", {"title": "x"}, 404, NO_AUTHOR_99),
    ("GET", "/Books/2/author", None, 200, {"name": "Ann", "id": 1}),
    ("GET", "/Authors/1/profile", None, 404, NO_PROFILE),
    ("POST", "/Authors/1/profile", {"bio": "b"}, 200, {"bio": "b", "id": 1, "authorId": 1}),
    ("PUT", "/Authors/1/profile", {"bio": "d"}, 200, {"bio": "d", "id": 1, "authorId": 1}),
    ("GET", "/Authors/1/profile", None, 200, {"bio": "d", "id": 1, "authorId": 1}),
    ("DELETE", "/Authors/1/profile", None, 204, None),
    ("POST", "/Readers", {"name": "R"}, 200, {"name": "R", "id": 1}),
    ("PUT", "/Books/2/readers/rel/1", {}, 200, {"id": 1, "bookId": 2, "readerId": 1}),
    ("GET", "/Books/2/readers", None, 200, [{"name": "R", "id": 1}]),
    ("PUT", "/Books/2/readers/rel/99", {}, 200, {"id": 2, "bookId": 2, "readerId": 99}),
    ("POST", "/Books/2/readers", {"name": "R2"}, 200, {"name": "R2", "id": 2}),
    (
        "GET",
        "/Loans",
        None,
        200,
        [
            {"id": 1, "bookId": 2, "readerId": 1},
            {"id": 2, "bookId": 2, "readerId": 99},
            {"id": 3, "bookId": 2, "readerId": 2},
        ],
    ),
    ("DELETE", "/Books/2/readers/rel/1", None, 204, None),
    ("DELETE", "/Authors/1/books/2", None, 204, None),
    ("DELETE", "/Authors/1/books/99", None, 404, NOT_BOOK_99),
    ("DELETE", "/Authors/1/books", None, 204, None),
    ("GET", "/Authors/1/books", None, 200, []),
    (
        "GET",
        "/Authors/1/nope",
        None,
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": 'Shared class "Author" has no method handling GET /1/nope',
            }
        },
    ),
]


def write_models(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    for model in MODELS:
        (directory / f"{model['name'].lower()}.json").write_text(json.dumps(model))
    return directory


@pytest.fixture
async def library(gateway_factory: ClientFactory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_factory(models=write_models(tmp_path / "models")) as client:
        yield client


async def test_relation_routes_reply_as_loopback_3(library: httpx.AsyncClient) -> None:
    for method, path, body, status, expected in SESSION:
        response = await library.request(method, f"/api{path}", json=body)
        assert (response.status_code, response.json() if response.content else None) == (status, expected), (
            method,
            path,
        )


async def test_a_dangling_belongs_to_is_null(library: httpx.AsyncClient) -> None:
    book = (await library.post("/api/Books", json={"title": "orphan", "authorId": 7})).json()
    reply = await library.get(f"/api/Books/{book['id']}/author")
    assert (reply.status_code, reply.json()) == (200, None)  # as LB3 3.28 answers (recorded on a public app)


async def test_a_second_has_one_is_refused(library: httpx.AsyncClient) -> None:
    await library.post("/api/Authors", json={"name": "Ann"})
    assert (await library.post("/api/Authors/1/profile", json={"bio": "a"})).status_code == 200
    second = await library.post("/api/Authors/1/profile", json={"bio": "b"})
    assert second.status_code == 409  # LB3 answers 500 here
    assert (await library.get("/api/Profiles/count")).json() == {"count": 1}


async def test_relation_writes_are_one_change_on_the_target_stream(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        models=write_models(tmp_path / "models"),
        drain_seconds=0.1,
    )
    async with serve(settings) as (url, _app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        await client.post("/api/Authors", json=[{"name": "Ann"}, {"name": "Bob"}])
        stream_path = "/api/Books/change-stream"
        by_author = stream_path + "?options=" + json.dumps({"where": {"authorId": 2}})
        async with open_stream(client, stream_path) as every, open_stream(client, by_author) as bobs:
            for stream in (every, bobs):
                await stream.read_until(lambda s: s.parser.last_event_id != "")
            ann = (await client.post("/api/Authors/1/books", json={"title": "A"})).json()
            bob = (await client.post("/api/Authors/2/books", json={"title": "B"})).json()
            patched = (await client.put(f"/api/Authors/2/books/{bob['id']}", json={"title": "B2"})).json()
            assert (await client.delete(f"/api/Authors/2/books/{bob['id']}")).status_code == 204
            await every.read_until(lambda s: len(s.data_events) >= 4)
            await bobs.read_until(lambda s: len(s.data_events) >= 3)
        assert every.changes() == [
            {"target": ann["id"], "data": ann, "type": "create"},
            {"target": bob["id"], "data": bob, "type": "create"},
            {"target": bob["id"], "data": patched, "type": "update"},
            {"target": bob["id"], "where": {"id": bob["id"]}, "type": "remove"},
        ]
        assert bobs.changes() == every.changes()[1:]


async def test_the_openapi_document_describes_the_relation_routes(library: httpx.AsyncClient) -> None:
    paths = (await library.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/Authors/{id}/books"]) == {"get", "post", "delete"}
    assert set(paths["/api/Authors/{id}/books/{fk}"]) == {"get", "put", "delete"}
    assert paths["/api/Authors/{id}/books/count"]["get"]["summary"] == "__count__books"
    assert set(paths["/api/Books/{id}/readers/rel/{fk}"]) == {"put", "delete"}
    assert set(paths["/api/Authors/{id}/profile"]) == {"get", "post", "put", "delete"}
    assert set(paths["/api/Books/{id}/author"]) == {"get"}
