"""Request for request, the replies LoopBack 3 gave (LOOPBACK3.md §1 and §5), on SQLite and PostgreSQL.

Where the gateway deliberately differs (README, "Compatibility"), the case says so and asserts our reply.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

SEED = [
    {"title": "alpha", "priority": 3},
    {"title": "beta", "done": True, "priority": 1},
    {"title": "gamma", "priority": 2},
    {"title": "delta", "done": True},
]
ALPHA = {"title": "alpha", "done": False, "priority": 3, "id": 1}
BETA = {"title": "beta", "done": True, "priority": 1, "id": 2}
GAMMA = {"title": "gamma", "done": False, "priority": 2, "id": 3}
DELTA = {"title": "delta", "done": True, "id": 4}


def q(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


READS: list[tuple[str, str, int, Any]] = [
    ("GET", "/api/Todos", 200, [ALPHA, BETA, GAMMA, DELTA]),
    (
        "GET",
        "/api/Todos?filter="
        + q(
            {
                "where": {"done": False},
                "order": "priority DESC",
                "limit": 1,
                "skip": 0,
                "fields": ["id", "title"],
            }
        ),
        200,
        [{"title": "alpha", "id": 1}],
    ),
    (
        "GET",
        "/api/Todos?filter="
        + q(
            {
                "where": {"priority": {"gte": 2}},
                "order": ["priority ASC"],
                "fields": {"title": True, "priority": True},
            }
        ),
        200,
        [{"title": "gamma", "priority": 2}, {"title": "alpha", "priority": 3}],
    ),
    (
        "GET",
        "/api/Todos?filter="
        + q({"where": {"or": [{"title": "beta"}, {"priority": {"inq": [3]}}]}, "limit": 5, "skip": 1}),
        200,
        [BETA],
    ),
    ("GET", "/api/Todos?filter[where][done]=true&filter[order]=id%20DESC", 200, [DELTA, BETA]),
    ("GET", "/api/Todos?filter=" + q({"order": "priority"}), 200, [DELTA, BETA, GAMMA, ALPHA]),
    # Deliberate difference: `like` is SQL LIKE (as on LoopBack's SQL connectors), not a regular expression.
    ("GET", "/api/Todos?filter=" + q({"where": {"title": {"like": "a%"}}}), 200, [ALPHA]),
    ("GET", "/api/Todos/count", 200, {"count": 4}),
    ("GET", "/api/Todos/count?where=" + q({"done": True}), 200, {"count": 2}),
    ("GET", "/api/Todos/1", 200, ALPHA),
    ("GET", "/api/Todos/1?filter=" + q({"fields": ["title"]}), 200, {"title": "alpha"}),
    ("GET", "/api/Todos/1/exists", 200, {"exists": True}),
    ("GET", "/api/Todos/999/exists", 200, {"exists": False}),
    ("GET", "/api/Todos/findOne?filter=" + q({"where": {"done": True}, "order": "id DESC"}), 200, DELTA),
    (
        "GET",
        "/api/Todos/findOne?filter=" + q({"where": {"title": "nope"}}),
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": 'Unknown "Todo" id "undefined".',
                "code": "MODEL_NOT_FOUND",
            }
        },
    ),
    (
        "GET",
        "/api/Todos/999",
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": 'Unknown "Todo" id "999".',
                "code": "MODEL_NOT_FOUND",
            }
        },
    ),
    (
        "GET",
        "/api/Todos/abc",
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": 'Unknown "Todo" id "abc".',
                "code": "MODEL_NOT_FOUND",
            }
        },
    ),
    (
        "GET",
        "/api/Todos?filter=notjson",
        400,
        {"error": {"statusCode": 400, "name": "Error", "message": "Value is not an object."}},
    ),
    (
        "GET",
        '/api/Todos?filter={"where":',
        400,
        {"error": {"statusCode": 400, "name": "Error", "message": "Value is not an object."}},
    ),
    (
        "GET",
        "/api/Todos/count?where=notjson",
        400,
        {"error": {"statusCode": 400, "name": "Error", "message": "Value is not an object."}},
    ),
    (
        "GET",
        "/api/Todos?filter=" + q({"order": "priority SIDEWAYS"}),
        400,
        {
            "error": {
                "statusCode": 400,
                "name": "Error",
                "message": 'The order "priority SIDEWAYS" has invalid direction',
            }
        },
    ),
    # A deliberate difference (README, Compatibility): LoopBack 3 answered this 404 `Shared class "Todo" has
    # no method handling DELETE /`; a method that no route of an existing path handles is a 405 with `Allow`.
    (
        "DELETE",
        "/api/Todos",
        405,
        {
            "error": {
                "statusCode": 405,
                "name": "Error",
                "message": 'Shared class "Todo" handles / only with GET, PATCH, POST, PUT',
            }
        },
    ),
    (
        "GET",
        "/api/Todos/1/nope",
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": 'Shared class "Todo" has no method handling GET /1/nope',
            }
        },
    ),
    (
        "GET",
        "/api/Nope",
        404,
        {"error": {"statusCode": 404, "name": "Error", "message": "There is no method to handle GET /Nope"}},
    ),
]


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for body in SEED:
        assert (await client.post("/api/Todos", json=body)).status_code == 200
    return client


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"), READS, ids=[f"{m} {p}"[:90] for m, p, _, _ in READS]
)
async def test_reads_match_loopback(
    seeded: httpx.AsyncClient, method: str, path: str, status: int, expected: Any
) -> None:
    response = await seeded.request(method, path)
    assert (response.status_code, response.json()) == (status, expected)
    assert response.headers["content-type"] == "application/json; charset=utf-8"


async def test_head_maps_to_exists(seeded: httpx.AsyncClient) -> None:
    found = await seeded.head("/api/Todos/1")
    assert (found.status_code, found.content, found.headers["content-length"]) == (200, b"", "15")
    missing = await seeded.head("/api/Todos/999")
    assert (missing.status_code, missing.content) == (404, b"")


def validation_error(
    message: str, codes: dict[str, list[str]], messages: dict[str, list[str]]
) -> dict[str, Any]:
    return {
        "error": {
            "statusCode": 422,
            "name": "ValidationError",
            "message": message,
            "details": {"context": "Todo", "codes": codes, "messages": messages},
        }
    }


async def test_validation_errors_match_loopback(seeded: httpx.AsyncClient) -> None:
    blank = {"title": ["presence"]}, {"title": ["can't be blank"]}
    cases = [
        ("POST", "/api/Todos", {"done": True}, "`title` can't be blank (value: undefined)", *blank),
        ("POST", "/api/Todos", {"title": ""}, '`title` can\'t be blank (value: "")', *blank),
        ("PATCH", "/api/Todos/1", {"title": None}, "`title` can't be blank (value: null)", *blank),
        (
            "POST",
            "/api/Todos",
            {"id": 1, "title": "dup"},
            "`id` can't be set (value: 1)",
            {"id": ["absence"]},
            {"id": ["can't be set"]},
        ),
    ]
    for method, path, body, detail, codes, messages in cases:
        response = await seeded.request(method, path, json=body)
        expected = validation_error(f"The `Todo` instance is not valid. Details: {detail}.", codes, messages)
        assert (response.status_code, response.json()) == (422, expected), body


async def test_wrong_type_is_422_not_silently_nulled(seeded: httpx.AsyncClient) -> None:
    """Deliberate difference: LoopBack stores `"priority": "high"` as null and answers 200."""
    response = await seeded.post("/api/Todos", json={"title": "x", "priority": "high"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"]["codes"] == {"priority": ["type"]}
    assert (
        error["message"]
        == 'The `Todo` instance is not valid. Details: `priority` is not a valid number (value: "high").'
    )
    assert (await seeded.get("/api/Todos/count")).json() == {"count": 4}


async def test_non_strict_model_keeps_undeclared_properties(seeded: httpx.AsyncClient) -> None:
    created = await seeded.post("/api/Todos", json={"title": "x", "extra": "field"})
    assert created.json() == {"title": "x", "done": False, "id": 5, "extra": "field"}
    assert (await seeded.get("/api/Todos/5")).json() == created.json()


async def test_malformed_json_is_400(seeded: httpx.AsyncClient) -> None:
    response = await seeded.post(
        "/api/Todos", content=b"{bad json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["name"] == "SyntaxError"


async def test_delete_counts(seeded: httpx.AsyncClient) -> None:
    assert (await seeded.delete("/api/Todos/3")).json() == {"count": 1}
    assert (await seeded.delete("/api/Todos/3")).json() == {"count": 0}
    assert (await seeded.delete("/api/Todos/abc")).json() == {"count": 0}


async def test_not_found_writes(seeded: httpx.AsyncClient) -> None:
    patch = await seeded.patch("/api/Todos/999", json={"done": True})
    assert (patch.status_code, patch.json()) == (
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": "could not find a model with id 999",
                "code": "MODEL_NOT_FOUND",
            }
        },
    )
    put = await seeded.put("/api/Todos/999", json={"title": "z"})
    assert (put.status_code, put.json()) == (
        404,
        {
            "error": {
                "statusCode": 404,
                "name": "Error",
                "message": "Could not replace. Object with id 999 does not exist!",
            }
        },
    )
    for method, verb in (("PATCH", "update attributes"), ("PUT", "replace")):
        response = await seeded.request(method, "/api/Todos", json={"id": 500, "title": "z"})
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"Could not {verb}. Object with id 500 does not exist!"


WRITES: list[tuple[str, str, Any, Any]] = [
    (
        "POST",
        "/api/Todos",
        {"title": "a", "priority": 1},
        {"title": "a", "done": False, "priority": 1, "id": 1},
    ),
    ("PATCH", "/api/Todos/1", {"done": True}, {"title": "a", "done": True, "priority": 1, "id": 1}),
    ("PUT", "/api/Todos/1", {"title": "b"}, {"title": "b", "done": False, "id": 1}),
    (
        "PUT",
        "/api/Todos",
        {"id": 1, "title": "c", "priority": 3},
        {"title": "c", "done": False, "priority": 3, "id": 1},
    ),
    ("PUT", "/api/Todos", {"title": "new-via-put"}, {"title": "new-via-put", "done": False, "id": 2}),
    ("PATCH", "/api/Todos", {"id": 1, "priority": 4}, {"title": "c", "done": False, "priority": 4, "id": 1}),
    ("POST", "/api/Todos/1/replace", {"title": "d"}, {"title": "d", "done": False, "id": 1}),
    ("POST", "/api/Todos/update?where=" + q({"id": 1}), {"done": False}, {"count": 1}),
    ("POST", "/api/Todos/update?where=" + q({"done": False}), {"priority": 9}, {"count": 2}),
    ("POST", "/api/Todos/update?where=" + q({"title": "nomatch"}), {"done": True}, {"count": 0}),
    ("POST", "/api/Todos/update?where=" + q({"id": "1"}), {"priority": 11}, {"count": 1}),
    (
        "POST",
        "/api/Todos/upsertWithWhere?where=" + q({"id": 2}),
        {"title": "uww"},
        {"title": "uww", "done": False, "priority": 9, "id": 2},
    ),
    # Deliberate difference: LoopBack leaves the `done` default out of this reply although it stores it.
    (
        "POST",
        "/api/Todos/upsertWithWhere?where=" + q({"title": "zzz"}),
        {"title": "uww-new"},
        {"title": "uww-new", "done": False, "id": 3},
    ),
    (
        "POST",
        "/api/Todos",
        [{"title": "m1"}, {"title": "m2"}],
        [{"title": "m1", "done": False, "id": 4}, {"title": "m2", "done": False, "id": 5}],
    ),
    ("DELETE", "/api/Todos/1", None, {"count": 1}),
    ("DELETE", "/api/Todos/999", None, {"count": 0}),
]


async def test_write_sequence_matches_loopback(client: httpx.AsyncClient) -> None:
    for method, path, body, expected in WRITES:
        response = await client.request(method, path, json=body)
        assert (response.status_code, response.json()) == (200, expected), f"{method} {path} {body}"
    assert (await client.get("/api/Todos/2")).json() == {
        "title": "uww",
        "done": False,
        "priority": 9,
        "id": 2,
    }
