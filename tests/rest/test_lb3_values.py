"""LoopBack's value and id rules over REST: juggler's coercion, `$now`, idInjection, forceId, routes' case."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.rest.conftest import ClientFactory

MODELS: list[dict[str, Any]] = [
    {
        "name": "Reading",
        "plural": "Readings",
        "properties": {
            "label": "string",
            "value": "number",
            "ok": "boolean",
            "at": {"type": "date", "default": "$now"},
            "history": ["number"],
            "place": "Place",
            "spot": "GeoPoint",
            "note": {"type": "string", "default": None},
        },
    },
    {
        "name": "Place",
        "base": "Model",
        "strict": True,
        "properties": {"city": {"type": "string", "required": True}, "zip": "number"},
    },
    {"name": "Legacy", "properties": {"id": "string", "title": "string"}},
    {
        "name": "Offline",
        "properties": {"id": {"type": "string", "id": True, "defaultFn": "uuid"}, "n": "number"},
    },
    {"name": "Keyed", "properties": {"code": {"type": "string", "id": True}, "n": "number"}},
]


@pytest.fixture
async def app(gateway_factory: ClientFactory, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    for model in MODELS:
        (tmp_path / f"{model['name'].lower()}.json").write_text(json.dumps(model))
    async with gateway_factory(models=tmp_path) as client:
        yield client


async def test_writes_coerce_as_juggler_does(app: httpx.AsyncClient) -> None:
    body = {
        "label": 42,
        "value": "3.5",
        "ok": "true",
        "history": ["1", 2],
        "place": {"city": "Oslo", "zip": "150"},
    }
    created = await app.post("/api/Readings", json=body)
    assert created.status_code == 200, created.text
    row = created.json()
    assert {k: row[k] for k in body} == {
        "label": "42",
        "value": 3.5,
        "ok": True,
        "history": [1, 2],
        "place": {"city": "Oslo", "zip": 150},
    }
    patched = await app.patch(f"/api/Readings/{row['id']}", json={"ok": "false", "value": "-2e1"})
    assert (patched.json()["ok"], patched.json()["value"]) == (False, -20)
    found = await app.get(
        "/api/Readings", params={"filter[where][value]": "-20", "filter[where][ok]": "false"}
    )
    assert [r["id"] for r in found.json()] == [row["id"]]


@pytest.mark.parametrize(
    ("body", "prop"),
    [
        ({"value": "high"}, "value"),
        ({"ok": "yes"}, "ok"),
        ({"at": "soon"}, "at"),
        ({"history": ["x"]}, "history"),
        ({"place": {"city": "Oslo", "planet": "Earth"}}, "place"),  # the embedded model is strict
    ],
)
async def test_values_loopback_would_null_stay_422(
    app: httpx.AsyncClient, body: dict[str, Any], prop: str
) -> None:
    response = await app.post("/api/Readings", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["codes"] == {prop: ["type"]}


async def test_embedded_required_properties_are_not_enforced_as_in_loopback(app: httpx.AsyncClient) -> None:
    row = (await app.post("/api/Readings", json={"place": {"zip": "1"}})).json()
    assert row["place"] == {"zip": 1}


async def test_geo_points_take_jugglers_forms(app: httpx.AsyncClient) -> None:
    for given in ({"lat": "59.9", "lng": 10.7}, [59.9, 10.7], "59.9,10.7"):
        row = (await app.post("/api/Readings", json={"spot": given})).json()
        assert row["spot"] == {"lat": 59.9, "lng": 10.7}
    for wrong in ({"k": 1}, "north", [100, 0]):
        response = await app.post("/api/Readings", json={"spot": wrong})
        assert response.json()["error"]["details"]["codes"] == {"spot": ["type"]}


async def test_a_null_default_is_no_default(app: httpx.AsyncClient) -> None:
    created = await app.post("/api/Readings", json={"label": "x"})
    assert created.status_code == 200, created.text
    assert "note" not in created.json()


async def test_dollar_now_defaults_to_the_time_of_the_create(app: httpx.AsyncClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    row = (await app.post("/api/Readings", json={"label": "x"})).json()
    at = datetime.fromisoformat(row["at"].replace("Z", "+00:00"))
    assert before <= at <= datetime.now(UTC) + timedelta(seconds=1)
    chosen = (await app.post("/api/Readings", json={"at": 0})).json()
    assert chosen["at"] == "1970-01-01T00:00:00.000Z"


async def test_a_declared_non_id_id_is_replaced_by_the_injected_one(app: httpx.AsyncClient) -> None:
    first = await app.post("/api/Legacies", json={"title": "a"})
    second = await app.post("/api/Legacies", json={"title": "b"})
    assert (first.status_code, second.status_code) == (200, 200), first.text
    assert [first.json(), second.json()] == [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}]
    refused = await app.post("/api/Legacies", json={"id": 7, "title": "c"})
    assert refused.json()["error"]["details"]["codes"] == {"id": ["absence"]}


async def test_a_default_fn_id_may_be_chosen_by_the_client(app: httpx.AsyncClient) -> None:
    chosen = await app.post("/api/Offlines", json={"id": "client-made", "n": 1})
    assert chosen.json() == {"id": "client-made", "n": 1}
    made = [(await app.post("/api/Offlines", json={"n": n})).json() for n in (2, 3)]
    assert [uuid.UUID(row["id"]).version for row in made] == [1, 1]  # juggler's "uuid" is time-based
    assert made[0]["id"] != made[1]["id"]


async def test_an_omitted_id_that_is_not_generated_cannot_be_blank(app: httpx.AsyncClient) -> None:
    response = await app.post("/api/Keyeds", json={"n": 1})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"]["codes"] == {"code": ["presence"]}
    assert (
        error["message"]
        == "The `Keyed` instance is not valid. Details: `code` can't be blank (value: undefined)."
    )


async def test_plural_routes_match_whatever_the_case(app: httpx.AsyncClient) -> None:
    created = (await app.post("/api/readings", json={"label": "a"})).json()
    assert (await app.get(f"/api/READINGS/{created['id']}")).json() == created
    assert (await app.get("/api/rEaDiNgS/count")).json() == {"count": 1}
    missing = await app.get("/api/readings/999")
    assert missing.json()["error"]["message"] == 'Unknown "Reading" id "999".'


async def test_order_ties_are_broken_by_the_id(app: httpx.AsyncClient) -> None:
    for label in ("b", "a", "b", "a", "b"):
        assert (await app.post("/api/Readings", json={"label": label})).status_code == 200
    rows = (await app.get("/api/Readings", params={"filter": json.dumps({"order": "label DESC"})})).json()
    assert [(r["label"], r["id"]) for r in rows] == [("b", 1), ("b", 3), ("b", 5), ("a", 2), ("a", 4)]
