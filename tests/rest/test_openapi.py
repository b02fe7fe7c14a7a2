"""The OpenAPI document says what the server does: statuses, the error envelope, JSON-typed arguments, `Allow`."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest

from gateway.models.rows import MAX_SAFE_INTEGER
from gateway.rest.filter_schema import digits_at_most
from gateway.rest.openapi import ERROR_SCHEMA_NAME
from tests.rest.conftest import ClientFactory

ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
WHERE_REF = {"$ref": "#/components/schemas/TodoWhere"}


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    return spec


async def test_every_operation_lists_its_errors_in_the_loopback_envelope(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    assert "HTTPValidationError" not in orjson.dumps(spec).decode()  # FastAPI's 422 shape is never sent
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        if path.startswith(("/api/", "/auth/"))
        for method, operation in item.items()
    ]
    assert len(operations) > 20
    for path, method, operation in operations:
        expected = {"400", "401", "403", "408", "429", "431", "503"}
        if method in ("post", "put", "patch"):
            expected |= {"404", "413", "422"}
        if "{id}" in path:
            expected.add("404")
        responses = operation["responses"]
        assert expected <= set(responses), (method, path)
        for status in expected:
            assert responses[status]["content"]["application/json"]["schema"] == ERROR_REF


async def test_filter_and_where_are_json_and_where_is_required_where_the_route_needs_it(
    client: httpx.AsyncClient,
) -> None:
    paths = (await _spec(client))["paths"]

    def parameter(path: str, method: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(p for p in paths[path][method]["parameters"] if p["name"] == name)
        return found

    options = parameter("/api/Todos/change-stream", "get", "options")
    assert set(options["content"]["application/json"]["schema"]["properties"]) == {"where", "fields"}
    find = parameter("/api/Todos", "get", "filter")["content"]["application/json"]["schema"]
    assert find == {"$ref": "#/components/schemas/TodoPageFilter"}
    assert parameter("/api/Todos/count", "get", "where")["required"] is False
    for path in ("/api/Todos/update", "/api/Todos/upsertWithWhere"):
        where = parameter(path, "post", "where")
        assert where["required"] is True
        assert where["content"]["application/json"]["schema"]["allOf"][0] == WHERE_REF


async def test_the_filter_language_names_the_model_properties_operators_and_limits(
    gateway_factory: ClientFactory,
) -> None:
    async with gateway_factory(max_page_size=500) as client:
        schemas = (await _spec(client))["components"]["schemas"]
    where = schemas["TodoWhere"]
    assert set(where["properties"]) == {"id", "title", "done", "priority", "and", "or"}
    assert where["additionalProperties"] is False
    operators = next(b for b in where["properties"]["title"]["anyOf"] if b.get("type") == "object")
    assert {"like", "regexp", "between", "inq"} <= set(operators["properties"])
    done = next(b for b in where["properties"]["done"]["anyOf"] if b.get("type") == "object")
    assert "like" not in done["properties"]  # like and regexp are for strings only
    page_limit = schemas["TodoPageFilter"]["properties"]["limit"]["anyOf"][0]
    assert page_limit == {"type": "integer", "minimum": 0, "maximum": 500}
    assert schemas["TodoFilter"]["properties"]["limit"]["anyOf"][0]["maximum"] == MAX_SAFE_INTEGER
    assert set(schemas["TodoIdFilter"]["properties"]) == {"fields", "include"}


@pytest.mark.parametrize("limit", [0, 9, 10, 99, 500, 10_000, MAX_SAFE_INTEGER, 2**63 - 1])
def test_digit_patterns_accept_exactly_the_numbers_up_to_their_limit(limit: int) -> None:
    pattern = re.compile(f"^(?:{digits_at_most(limit, 20)})$")
    probes = {0, 1, limit, limit + 1, limit - 1, limit * 10, limit // 10, 10 ** len(str(limit)) - 1}
    for probe in sorted(p for p in probes if p >= 0):
        for text in (str(probe), str(probe).zfill(20), str(probe).zfill(21)):
            accepted = len(text) <= 20 and probe <= limit
            assert bool(pattern.match(text)) is accepted, (limit, text)


async def test_bodies_say_what_the_validation_accepts(client: httpx.AsyncClient) -> None:
    schemas = (await _spec(client))["components"]["schemas"]
    todo = schemas["Todo"]
    assert todo["required"] == ["title"]
    title = todo["properties"]["title"]["anyOf"]
    assert title[0] == {"type": "string", "pattern": "^[^\x00]*$", "minLength": 1}  # "can't be blank"
    assert title[1]["type"] == "number"  # which a write turns into text, as juggler does
    assert "id" not in schemas["TodoChanges"]["properties"]  # the id of a patch is the path's
    assert "id" not in schemas["TodoNew"]["properties"]  # forceId: a create may not choose it
    assert "required" not in schemas["TodoRow"]  # a row may lack any property (fields, unset)


async def test_a_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    reply = await client.request("PUT", "/auth/session")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "DELETE, POST"
    assert reply.json()["error"]["statusCode"] == 405


async def test_a_method_no_route_of_a_model_path_handles_is_a_405_with_allow(
    client: httpx.AsyncClient,
) -> None:
    for method, path, allow in [
        ("DELETE", "/api/Todos", "GET, PATCH, POST, PUT"),
        ("POST", "/api/Todos/count", "GET"),  # a literal route's path is not an {id}
        ("PUT", "/api/Todos/1/exists", "GET"),
        ("OPTIONS", "/api/Todos/change-stream", "GET, POST"),  # the stream's path is not an {id}
    ]:
        reply = await client.request(method, path)
        assert (reply.status_code, reply.headers.get("allow")) == (405, allow), (method, path)
        assert reply.json()["error"]["statusCode"] == 405
    for method, path in [("PUT", "/api/Todos/1/nope"), ("GET", "/api/Todos/")]:
        nowhere = await client.request(method, path)
        assert nowhere.status_code == 404, path  # no route has the path: LoopBack's 404
        assert "allow" not in nowhere.headers
