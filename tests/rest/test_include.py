"""`include` in every filter form and for every relation kind, one query per relation level."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from gateway.app import Gateway
from gateway.config import Settings
from tests.rest.conftest import serve_in_process

LIBRARY: list[dict[str, Any]] = [
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
            "reviews": {"type": "hasMany", "model": "Review"},
            "tags": {"type": "referencesMany", "model": "Tag"},
            "readers": {"type": "hasMany", "model": "Reader", "through": "Loan"},
        },
    },
    {
        "name": "Review",
        "hidden": ["reviewer"],
        "properties": {"stars": "number", "reviewer": "string"},
        "relations": {"book": {"type": "belongsTo", "model": "Book"}},
    },
    {"name": "Tag", "properties": {"label": "string"}},
    {"name": "Reader", "properties": {"name": "string"}},
    {
        "name": "Loan",
        "relations": {
            "book": {"type": "belongsTo", "model": "Book"},
            "reader": {"type": "belongsTo", "model": "Reader"},
        },
    },
]


@pytest.fixture
async def library(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    for model in LIBRARY:
        (tmp_path / f"{model['name'].lower()}.json").write_text(json.dumps(model))
    settings = Settings(database_url=database_url, models=tmp_path)
    async with serve_in_process(settings) as (client, gateway):
        await seed(client)
        yield client, gateway


async def post(client: httpx.AsyncClient, plural: str, body: Any) -> Any:
    response = await client.post(f"/api/{plural}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def seed(client: httpx.AsyncClient) -> None:
    await post(client, "Authors", [{"name": "Ann"}, {"name": "Bob"}, {"name": "Cy"}])
    await post(client, "Profiles", [{"bio": "writes", "authorId": 1}])
    await post(client, "Tags", [{"label": "sf"}, {"label": "old"}])
    await post(
        client,
        "Books",
        [
            {"title": "A1", "authorId": 1, "tagIds": [2, 1]},
            {"title": "A2", "authorId": 1},
            {"title": "B1", "authorId": 2, "tagIds": [1]},
        ],
    )
    await post(
        client,
        "Reviews",
        [{"stars": 5, "bookId": 1, "reviewer": "x"}, {"stars": 3, "bookId": 1}, {"stars": 4, "bookId": 3}],
    )
    await post(client, "Readers", [{"name": "R1"}, {"name": "R2"}])
    await post(client, "Loans", [{"bookId": 1, "readerId": 2}, {"bookId": 1, "readerId": 1}])


async def find(client: httpx.AsyncClient, path: str, flt: Any) -> Any:
    response = await client.get(path, params={"filter": json.dumps(flt)})
    assert response.status_code == 200, response.text
    return response.json()


async def test_has_many_and_has_one_in_string_and_list_forms(
    library: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = library
    authors = await find(client, "/api/Authors", {"include": ["books", "profile"], "order": "id"})
    assert [[b["title"] for b in a["books"]] for a in authors] == [["A1", "A2"], ["B1"], []]
    assert authors[0]["profile"] == {"bio": "writes", "id": 1, "authorId": 1}
    assert "profile" not in authors[1]
    assert list(authors[0]) == ["name", "id", "books", "profile"]  # relations after the properties


async def test_belongs_to_references_many_and_through(library: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = library
    book = await find(client, "/api/Books/1", {"include": ["author", "tags", "readers"]})
    assert book["author"] == {"name": "Ann", "id": 1}
    assert [t["label"] for t in book["tags"]] == ["old", "sf"]  # in the order of the key list
    assert sorted(r["name"] for r in book["readers"]) == ["R1", "R2"]


async def test_nested_include_and_scopes(library: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = library
    nested = await find(client, "/api/Authors", {"include": {"books": "reviews"}, "where": {"id": 1}})
    reviews = [r["stars"] for r in nested[0]["books"][0]["reviews"]]
    assert reviews == [5, 3]
    assert all("reviewer" not in r for r in nested[0]["books"][0]["reviews"])  # hidden stays hidden
    scoped = await find(
        client,
        "/api/Authors",
        {
            "fields": ["name"],
            "include": {
                "relation": "books",
                "scope": {
                    "where": {"title": {"like": "A%"}},
                    "order": "title DESC",
                    "limit": 1,
                    "fields": ["title"],
                    "include": {"relation": "reviews", "scope": {"where": {"stars": {"gt": 4}}}},
                },
            },
        },
    )
    assert scoped == [
        {"name": "Ann", "books": [{"title": "A2", "reviews": []}]},
        {"name": "Bob", "books": []},
        {"name": "Cy", "books": []},
    ]
    one = (await client.get("/api/Books/findOne", params={"filter[include]": "author"})).json()
    assert one["author"]["name"] == "Ann"


async def test_unknown_relations_and_bad_scopes_are_400(library: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = library
    unknown = await client.get("/api/Books", params={"filter": json.dumps({"include": "nope"})})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == 'Relation "nope" is not defined for Book model'
    bad = {"include": {"relation": "reviews", "scope": {"where": {"stars": {"gt": "many"}}}}}
    assert (await client.get("/api/Books", params={"filter": json.dumps(bad)})).status_code == 400


async def test_a_two_level_include_over_100_rows_runs_three_queries(
    library: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, gateway = library
    await post(client, "Books", [{"title": f"T{i}", "authorId": 1 + i % 3} for i in range(100)])
    await post(client, "Reviews", [{"stars": i % 5, "bookId": 4 + i} for i in range(100)])
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(gateway.engine.sync_engine, "before_cursor_execute", record)
    try:
        books = await find(client, "/api/Books", {"include": ["author", "reviews"], "limit": 100, "skip": 3})
        authors = await find(client, "/api/Authors", {"include": {"books": "reviews"}})
    finally:
        event.remove(gateway.engine.sync_engine, "before_cursor_execute", record)
    assert len(books) == 100
    assert all(b["author"]["id"] == b["authorId"] and len(b["reviews"]) == 1 for b in books)
    assert sum(len(a["books"]) for a in authors) == 103
    # 3 per request: the rows, then one per relation level; and the second request, without a limit, first
    # probes the row past the page size (ids only) so that a list too long is refused before it is read.
    assert len(statements) == 7, statements
