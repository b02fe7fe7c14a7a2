"""Shared test data: one model, a handful of JSON-form rows, and where clauses with the ids they select.

The same table runs through the Python predicate (`test_predicate.py`) and through SQL on both databases
(`test_sql.py`), so every hand-written case is also an agreement check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.models.definition import ModelDef, PropertyType
from gateway.models.loader import parse_model
from gateway.models.rows import parse_date

TODO: ModelDef = parse_model(
    "tests/filters",
    {
        "name": "Todo",
        "properties": {
            "title": {"type": "string", "required": True},
            "done": {"type": "boolean", "default": False},
            "priority": "number",
            "due": "date",
            "tags": ["string"],
            "meta": "object",
            "secret": "string",
        },
        "hidden": ["secret"],
    },
)
"""Properties in order: title, done, priority, due, tags, meta, secret (hidden), id (injected, last)."""

ROWS: list[dict[str, Any]] = [
    {"title": "alpha", "done": False, "priority": 3, "due": "2026-01-01T00:00:00.000Z", "id": 1},
    {"title": "beta", "done": True, "priority": 1, "due": "2025-06-01T12:30:00.250Z", "id": 2},
    {"title": "Gamma", "done": False, "priority": 2.5, "id": 3},
    {"title": "delta", "done": True, "due": "1999-12-31T23:59:59.999Z", "id": 4},
    {"title": "50% off_now", "priority": -1, "id": 5},
    {"title": "back\\slash", "done": False, "priority": 0, "id": 6},
    {"title": "École été", "done": True, "priority": 1000000, "id": 7},
    {"title": "", "done": False, "priority": -0.5, "due": "2026-01-01T00:00:00.001Z", "id": 8},
    {"id": 9},
]

WHERE_CASES: list[tuple[Any, set[int]]] = [
    # eq and NULL
    ({"title": "alpha"}, {1}),
    ({"title": {"eq": "alpha"}}, {1}),
    ({"title": None}, {9}),
    ({"title": {"eq": None}}, {9}),
    ({"title": ""}, {8}),
    ({"done": True}, {2, 4, 7}),
    ({"done": "false"}, {1, 3, 6, 8}),
    ({"done": None}, {5, 9}),
    ({"priority": 1}, {2}),
    ({"priority": "2.5"}, {3}),
    ({"priority": -0.5}, {8}),
    ({"due": "2026-01-01T00:00:00.000Z"}, {1}),
    ({"due": "2026-01-01T01:00:00+01:00"}, {1}),
    ({"due": 1767225600000}, {1}),
    ({"id": "3"}, {3}),
    # neq
    ({"title": {"neq": "alpha"}}, {2, 3, 4, 5, 6, 7, 8, 9}),
    ({"title": {"neq": None}}, {1, 2, 3, 4, 5, 6, 7, 8}),
    ({"done": {"neq": True}}, {1, 3, 5, 6, 8, 9}),
    ({"priority": {"neq": 1}}, {1, 3, 4, 5, 6, 7, 8, 9}),
    ({"due": {"neq": "2026-01-01T00:00:00.000Z"}}, {2, 3, 4, 5, 6, 7, 8, 9}),
    # orderings: code point order for strings, instants for dates, false < true
    ({"title": {"gt": "beta"}}, {4, 7}),
    ({"title": {"gte": "beta"}}, {2, 4, 7}),
    ({"title": {"lt": "a"}}, {3, 5, 8}),
    ({"title": {"lte": "alpha"}}, {1, 3, 5, 8}),
    ({"title": {"gt": "Z"}}, {1, 2, 4, 6, 7}),
    ({"priority": {"gt": 1}}, {1, 3, 7}),
    ({"priority": {"gte": "1"}}, {1, 2, 3, 7}),
    ({"priority": {"lt": 0}}, {5, 8}),
    ({"priority": {"lte": 0}}, {5, 6, 8}),
    ({"due": {"gt": "2026-01-01T00:00:00.000Z"}}, {8}),
    ({"due": {"gte": "2026-01-01"}}, {1, 8}),
    ({"due": {"lt": "2000-01-01T00:00:00.000Z"}}, {4}),
    ({"done": {"gt": False}}, {2, 4, 7}),
    ({"done": {"lte": False}}, {1, 3, 6, 8}),
    ({"id": {"gt": 7}}, {8, 9}),
    # between
    ({"priority": {"between": [0, 2.5]}}, {2, 3, 6}),
    ({"priority": {"between": ["-1", "0"]}}, {5, 6, 8}),
    ({"priority": {"between": [3, 0]}}, set()),
    ({"title": {"between": ["b", "d"]}}, {2, 6}),
    ({"due": {"between": ["2025-01-01", "2026-01-01T00:00:00.000Z"]}}, {1, 2}),
    ({"id": {"between": [2, 4]}}, {2, 3, 4}),
    # inq / nin
    ({"title": {"inq": ["alpha", "Gamma", "nope"]}}, {1, 3}),
    ({"title": {"inq": []}}, set()),
    ({"title": {"nin": ["alpha", "Gamma"]}}, {2, 4, 5, 6, 7, 8, 9}),
    ({"title": {"nin": []}}, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
    ({"priority": {"inq": [1, "3", 0]}}, {1, 2, 6}),
    ({"priority": {"nin": [1, 3]}}, {3, 4, 5, 6, 7, 8, 9}),
    ({"done": {"inq": [True]}}, {2, 4, 7}),
    ({"done": {"nin": [True]}}, {1, 3, 5, 6, 8, 9}),
    ({"due": {"inq": ["2026-01-01T00:00:00.000Z", "1999-12-31T23:59:59.999Z"]}}, {1, 4}),
    ({"id": {"inq": ["1", 2]}}, {1, 2}),
    ({"id": {"nin": [1]}}, {2, 3, 4, 5, 6, 7, 8, 9}),
    # like family: % and _ wildcards, \ escapes, case
    ({"title": {"like": "%a"}}, {1, 2, 3, 4}),
    ({"title": {"like": "_eta"}}, {2}),
    ({"title": {"like": "%\\%%"}}, {5}),
    ({"title": {"like": "%\\_%"}}, {5}),
    ({"title": {"like": "%_%"}}, {1, 2, 3, 4, 5, 6, 7}),
    ({"title": {"like": "%\\\\%"}}, {6}),
    ({"title": {"like": "%"}}, {1, 2, 3, 4, 5, 6, 7, 8}),
    ({"title": {"like": ""}}, {8}),
    ({"title": {"like": "g%"}}, set()),
    ({"title": {"like": "é%"}}, set()),
    ({"title": {"nlike": "%a"}}, {5, 6, 7, 8, 9}),
    ({"title": {"ilike": "g%"}}, {3}),
    ({"title": {"ilike": "école%"}}, {7}),
    ({"title": {"ilike": "%ÉTÉ"}}, {7}),
    ({"title": {"ilike": "%OFF\\_%"}}, {5}),
    ({"title": {"nilike": "%A"}}, {5, 6, 7, 8, 9}),
    # regexp, Python syntax shared with PostgreSQL's
    ({"title": {"regexp": "^a"}}, {1}),
    ({"title": {"regexp": "a$"}}, {1, 2, 3, 4}),
    ({"title": {"regexp": "/^G/"}}, {3}),
    ({"title": {"regexp": "/^g/i"}}, {3}),
    ({"title": {"regexp": "/^g/gm"}}, set()),
    ({"title": {"regexp": "/ÉTÉ$/i"}}, {7}),
    ({"title": {"regexp": "[0-9]+%"}}, {5}),
    ({"title": {"regexp": "\\\\"}}, {6}),
    ({"title": {"regexp": "^(alpha|beta)$"}}, {1, 2}),
    ({"title": {"regexp": "^.{4}$|al"}}, {1, 2}),
    ({"title": {"regexp": ""}}, {1, 2, 3, 4, 5, 6, 7, 8}),
    # several operators, several keys, and/or
    ({"priority": {"gt": 0, "lt": 3}}, {2, 3}),
    ({"done": False, "priority": {"gte": 0}}, {1, 3, 6}),
    ({"or": [{"title": "beta"}, {"priority": {"inq": [3]}}]}, {1, 2}),
    ({"and": [{"done": True}, {"or": [{"priority": None}, {"priority": {"gt": 100}}]}]}, {4, 7}),
    ({"or": [{"and": [{"done": True}, {"title": {"like": "d%"}}]}, {"id": 9}]}, {4, 9}),
    ({"and": []}, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
    ({"or": []}, set()),
    ({"or": [{}]}, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
    ({"or": [{"title": "alpha"}], "done": True}, set()),
    ({}, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
    (None, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
]


def stored_row(model: ModelDef, row: Mapping[str, Any]) -> dict[str, Any]:
    """The column values that `to_json_row` turns back into `row` (every declared column present)."""
    stored: dict[str, Any] = {}
    for prop in model.properties:
        value = row.get(prop.name)
        if value is not None and prop.type is PropertyType.DATE:
            value = parse_date(value)
        elif value is not None and prop.type is PropertyType.NUMBER and not prop.is_id:
            value = float(value)
        stored[prop.name] = value
    return stored
