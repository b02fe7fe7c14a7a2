"""`fields.project`: keep the listed keys, in the row's (model) order, never failing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.filters.fields import project
from gateway.filters.parse import parse_fields
from gateway.models.rows import to_json_row

from .cases import TODO, stored_row

ROW = {"title": "a", "done": False, "priority": 3, "id": 1, "extra": "x"}
CASES: list[tuple[dict[str, Any], tuple[str, ...] | None, dict[str, Any]]] = [
    (ROW, None, ROW),
    (ROW, (), {}),
    (ROW, ("title", "id"), {"title": "a", "id": 1}),
    (ROW, ("id", "title"), {"title": "a", "id": 1}),
    (ROW, ("due", "id"), {"id": 1}),
    (ROW, ("extra",), {"extra": "x"}),
    ({}, ("title",), {}),
    ({}, None, {}),
]


@pytest.mark.parametrize(("row", "fields", "expected"), CASES)
def test_project(row: dict[str, Any], fields: tuple[str, ...] | None, expected: dict[str, Any]) -> None:
    projected = project(row, fields)
    assert projected == expected
    assert list(projected) == list(expected)


def test_project_returns_a_new_dict() -> None:
    projected = project(ROW, None)
    projected["title"] = "changed"
    assert ROW["title"] == "a"


def test_keys_follow_model_order_not_request_order() -> None:
    row = to_json_row(TODO, stored_row(TODO, {"title": "t", "priority": 2, "done": True, "id": 5}))
    fields = parse_fields(TODO, ["id", "priority", "title"])
    assert list(project(row, fields)) == ["title", "priority", "id"]
    assert list(project(row, parse_fields(TODO, {"done": False}))) == ["title", "priority", "id"]
