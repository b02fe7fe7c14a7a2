"""REST routes beyond the captured LoopBack session: other property types, id kinds, strictness, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.rest.conftest import ClientFactory

NOTE = {
    "name": "Note",
    "strict": True,
    "forceId": False,
    "properties": {
        "code": {"type": "string", "id": True},
        "body": {"type": "string", "required": True},
        "tags": ["string"],
        "meta": {"type": "object"},
        "due": {"type": "date"},
        "score": {"type": "number", "default": 1.5},
        "secret": {"type": "string"},
    },
    "hidden": ["secret"],
}


@pytest.fixture
async def notes(gateway_factory: ClientFactory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "note.json").write_text(json.dumps(NOTE))
    (tmp_path / "todo.json").write_text(
        json.dumps(
            {"name": "Todo", "properties": {"title": {"type": "string", "required": True}, "done": "boolean"}}
        )
    )
    async with gateway_factory(models=tmp_path) as client:
        yield client


async def test_string_ids_dates_arrays_objects_round_trip(notes: httpx.AsyncClient) -> None:
    body = {
        "code": "n1",
        "body": "hi",
        "tags": ["a", "b"],
        "meta": {"k": [1, {"x": None}]},
        "due": "2026-11-28T01:02:03.456+01:00",
    }
    created = await notes.post("/api/Notes", json=body)
    assert created.status_code == 200
    expected = {**body, "due": "2026-11-28T00:02:03.456Z", "score": 1.5}
    assert created.json() == expected
    assert (await notes.get("/api/Notes/n1")).json() == expected
    by_date = await notes.get(
        "/api/Notes", params={"filter": json.dumps({"where": {"due": {"gt": "2026-11-28T00:00:00Z"}}})}
    )
    assert [n["code"] for n in by_date.json()] == ["n1"]
    assert (await notes.post("/api/Notes", json={"code": "n1", "body": "again"})).status_code == 409


async def test_hidden_properties_are_stored_but_never_returned(notes: httpx.AsyncClient) -> None:
    created = await notes.post("/api/Notes", json={"code": "h", "body": "b", "secret": "s3"})
    assert "secret" not in created.json()
    assert "secret" not in (await notes.get("/api/Notes/h")).json()


async def test_strict_model_rejects_unknown_properties(notes: httpx.AsyncClient) -> None:
    response = await notes.post("/api/Notes", json={"code": "x", "body": "b", "extra": 1})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["codes"] == {"extra": ["unknown-property"]}


@pytest.mark.parametrize(
    ("body", "codes"),
    [
        ({"code": "x", "body": {"text": 3}}, {"body": ["type"]}),
        ({"code": "x", "body": "b", "tags": ["a", {"b": 2}]}, {"tags": ["type"]}),
        ({"code": "x", "body": "b", "tags": "a"}, {"tags": ["type"]}),
        ({"code": "x", "body": "b", "meta": [1]}, {"meta": ["type"]}),
        ({"code": "x", "body": "b", "due": "yesterday"}, {"due": ["type"]}),
        ({"code": "x", "body": "b", "score": True}, {"score": ["type"]}),
        ({"code": "x"}, {"body": ["presence"]}),
    ],
)
async def test_wrong_types_are_422(
    notes: httpx.AsyncClient, body: dict[str, object], codes: dict[str, list[str]]
) -> None:
    response = await notes.post("/api/Notes", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["codes"] == codes
    assert (await notes.get("/api/Notes/count")).json() == {"count": 0}


async def test_bulk_create_is_all_or_nothing(notes: httpx.AsyncClient) -> None:
    response = await notes.post("/api/Todos", json=[{"title": "ok"}, {"done": True}])
    assert response.status_code == 422
    assert (await notes.get("/api/Todos/count")).json() == {"count": 0}
    assert (await notes.post("/api/Todos", json=[])).json() == []


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"text"', b"42", b"null"],
)
async def test_bodies_that_are_not_objects_are_400(notes: httpx.AsyncClient, body: bytes) -> None:
    response = await notes.post("/api/Todos", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["statusCode"] == 400


async def test_update_all_needs_an_explicit_where(notes: httpx.AsyncClient) -> None:
    for title in ("a", "b"):
        await notes.post("/api/Todos", json={"title": title})
    missing = await notes.post("/api/Todos/update", json={"done": True})
    assert missing.status_code == 400
    assert (await notes.post("/api/Todos/update?where={}", json={"done": True})).json() == {"count": 2}
    assert (await notes.get("/api/Todos/count?where[done]=true")).json() == {"count": 2}
    with_id = await notes.post("/api/Todos/update?where={}", json={"id": 9})
    assert with_id.status_code == 422


async def test_upsert_with_where_refuses_ambiguity(notes: httpx.AsyncClient) -> None:
    for title in ("same", "same"):
        await notes.post("/api/Todos", json={"title": title})
    response = await notes.post("/api/Todos/upsertWithWhere?where[title]=same", json={"done": True})
    assert response.status_code == 400
    assert (await notes.post("/api/Todos/upsertWithWhere", json={"title": "x"})).status_code == 400


async def test_patch_cannot_change_the_id(notes: httpx.AsyncClient) -> None:
    await notes.post("/api/Todos", json={"title": "a"})
    response = await notes.patch("/api/Todos/1", json={"id": 2, "title": "b"})
    assert (response.status_code, response.json()["error"]["message"]) == (
        400,
        "id property (id) cannot be updated from 1 to 2",
    )


@pytest.mark.parametrize(
    "query",
    [
        {"filter": '{"where":{"nope":1}}'},
        {"filter": '{"where":{"title":{"near":1}}}'},
        {"filter": '{"limit":-1}'},
        {"filter": '{"skip":"x"}'},
        {"filter": '{"order":"nope"}'},
        {"filter": '{"include":"owner"}'},
        {"filter[where][done]": "perhaps"},
        {"filter": '{"where":{"or":{"title":"a"}}}'},
        {"filter": '{"where":{"title":{"regexp":"("}}}'},
    ],
)
async def test_bad_filters_are_400(notes: httpx.AsyncClient, query: dict[str, str]) -> None:
    response = await notes.get("/api/Todos", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["name"] == "Error"


async def test_openapi_documents_every_model(notes: httpx.AsyncClient) -> None:
    spec = (await notes.get("/openapi.json")).json()
    assert set(spec["components"]["schemas"]) >= {"Note", "Todo"}
    assert spec["components"]["schemas"]["Note"]["required"] == ["body"]
    assert "secret" not in spec["components"]["schemas"]["Note"]["properties"]
    assert {"get", "post", "put", "patch"} <= set(spec["paths"]["/api/Todos"])
    assert "/api/Todos/change-stream" in spec["paths"]
    assert (await notes.get("/docs")).status_code == 200


@pytest.mark.parametrize("raw", ["%C2%B2", "%D9%A3", "-", "1.5", "99999999999999999999"])
async def test_ids_that_are_not_numbers_are_not_found(notes: httpx.AsyncClient, raw: str) -> None:
    assert (await notes.get(f"/api/Todos/{raw}/exists")).json() == {"exists": False}
    assert (await notes.get(f"/api/Todos/{raw}")).status_code == 404
    assert (await notes.post(f"/api/Todos/{raw}/replace", json={"title": "x"})).status_code == 404


async def test_a_regexp_only_python_understands_is_400_on_postgresql(
    notes: httpx.AsyncClient, database_url: str
) -> None:
    await notes.post("/api/Todos", json={"title": "a"})
    response = await notes.get("/api/Todos", params={"filter": '{"where":{"title":{"regexp":"(?P<n>a)"}}}'})
    if database_url.startswith("postgresql"):
        assert (response.status_code, response.json()["error"]["statusCode"]) == (400, 400)
    else:
        assert [row["title"] for row in response.json()] == ["a"]


async def test_a_pathological_regexp_is_answered_at_once(notes: httpx.AsyncClient) -> None:
    """On SQLite the REGEXP function runs in the database's one thread: with a backtracking engine this
    request would hold it (and every other request of the worker) for hours."""
    await notes.post("/api/Todos", json={"title": "a" * 40 + "!"})
    async with asyncio.timeout(10):
        response = await notes.get("/api/Todos", params={"filter": '{"where":{"title":{"regexp":"(a+)+$"}}}'})
    assert response.json() == []


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize("bad_id", [10**30, 1.5, "abc", True])
async def test_upserts_with_an_impossible_id_are_422(
    notes: httpx.AsyncClient, method: str, bad_id: object
) -> None:
    response = await notes.request(method, "/api/Todos", json={"id": bad_id, "title": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["codes"] == {"id": ["type"]}
