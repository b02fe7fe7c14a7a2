"""The OpenAPI document says what the server does: statuses, the error envelope, JSON-typed arguments, `Allow`."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from gateway.rest.openapi import ERROR_SCHEMA_NAME

ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}


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
        expected = {"400", "401", "403", "429", "503"}
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
    find = parameter("/api/Todos", "get", "filter")
    assert find["content"]["application/json"]["schema"]["properties"]["limit"]["type"] == "integer"
    assert parameter("/api/Todos/count", "get", "where")["required"] is False
    for path in ("/api/Todos/update", "/api/Todos/upsertWithWhere"):
        where = parameter(path, "post", "where")
        assert where["required"] is True
        assert where["content"]["application/json"]["schema"]["type"] == "object"


async def test_bodies_say_what_the_validation_accepts(client: httpx.AsyncClient) -> None:
    schemas = (await _spec(client))["components"]["schemas"]
    todo = schemas["Todo"]
    assert todo["required"] == ["title"]
    assert todo["properties"]["title"]["minLength"] == 1  # LoopBack's "can't be blank"
    assert todo["properties"]["title"]["pattern"] == "^[^\x00]*$"
    assert "id" not in schemas["TodoNew"]["properties"]  # forceId: a create may not choose it
    assert "required" not in schemas["TodoRow"]  # a row may lack any property (fields, unset)


async def test_a_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    reply = await client.request("PUT", "/auth/session")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "DELETE, POST"
    assert reply.json()["error"]["statusCode"] == 405
