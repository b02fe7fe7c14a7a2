"""`querystring`: npm `qs` parsing as Express 4 does it, and LoopBack's object arguments."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.filters.ast import FilterError
from gateway.filters.querystring import argument, object_argument, parse_query

Items = list[tuple[str, str]]

QS_CASES: list[tuple[Items, dict[str, Any]]] = [
    ([], {}),
    ([("a", "b")], {"a": "b"}),
    ([("a", "")], {"a": ""}),
    ([("", "x"), ("a", "1")], {"a": "1"}),
    # nesting
    ([("filter[where][done]", "true")], {"filter": {"where": {"done": "true"}}}),
    (
        [("filter[where][done]", "true"), ("filter[order]", "id DESC"), ("filter[limit]", "2")],
        {"filter": {"where": {"done": "true"}, "order": "id DESC", "limit": "2"}},
    ),
    ([("[a]", "1")], {"a": "1"}),
    ([("a[b]", "1"), ("a[c]", "2")], {"a": {"b": "1", "c": "2"}}),
    ([("a[b]c[d]", "1")], {"a": {"b": {"d": "1"}}}),
    ([("a[b", "1")], {"a[b": "1"}),
    ([("a]b", "1")], {"a]b": "1"}),
    # arrays: indices, [] and repeated keys
    (
        [("filter[where][id][inq][0]", "1"), ("filter[where][id][inq][1]", "2")],
        {"filter": {"where": {"id": {"inq": ["1", "2"]}}}},
    ),
    ([("a[]", "1"), ("a[]", "2")], {"a": ["1", "2"]}),
    ([("a[]", "")], {"a": [""]}),
    ([("a", "1"), ("a", "2"), ("a", "3")], {"a": ["1", "2", "3"]}),
    ([("a[1]", "b"), ("a[3]", "c")], {"a": ["b", "c"]}),
    ([("a[1]", "b"), ("a[0]", "c")], {"a": ["c", "b"]}),
    ([("a[]", "1"), ("a[5]", "2")], {"a": ["1", "2"]}),
    ([("a[0]", "x"), ("a[]", "y")], {"a": ["x", "y"]}),
    ([("a[0][b]", "1"), ("a[0][c]", "2"), ("a[1][b]", "3")], {"a": [{"b": "1", "c": "2"}, {"b": "3"}]}),
    ([("a[01]", "x")], {"a": {"01": "x"}}),
    ([("a[-1]", "x")], {"a": {"-1": "x"}}),
    ([("[]", "x")], {"0": "x"}),
    ([("a[][]", "x")], {"a": ["x"]}),
    # arrayLimit: indices above 20 are object keys, and an array meeting an object becomes one
    ([("a[20]", "x")], {"a": ["x"]}),
    ([("a[21]", "x")], {"a": {"21": "x"}}),
    ([("a[0]", "x"), ("a[21]", "y")], {"a": {"0": "x", "21": "y"}}),
    ([("a[b]", "1"), ("a[]", "2")], {"a": {"b": "1", "0": "2"}}),
    ([("a[]", "1"), ("a[b]", "2")], {"a": {"0": "1", "b": "2"}}),
    # plain values meeting objects
    ([("a", "1"), ("a[b]", "2")], {"a": ["1", {"b": "2"}]}),
    ([("a[b]", "2"), ("a", "1")], {"a": {"b": "2", "1": True}}),
    ([("a[b]", "2"), ("a", "")], {"a": {"b": "2"}}),
    ([("a", ""), ("a[b]", "2")], {"a": ["", {"b": "2"}]}),
    # depth 5, the rest kept as one literal key
    ([("a[b][c][d][e][f]", "1")], {"a": {"b": {"c": {"d": {"e": {"f": "1"}}}}}}),
    ([("a[b][c][d][e][f][g][h]", "1")], {"a": {"b": {"c": {"d": {"e": {"f": {"[g][h]": "1"}}}}}}}),
    (
        [("filter[where][or][0][and][1][title]", "x")],
        {"filter": {"where": {"or": [{"and": [{"[title]": "x"}]}]}}},
    ),
    ([("a[__proto__]", "1"), ("a[b]", "2")], {"a": {"b": "2"}}),
]


@pytest.mark.parametrize(("items", "expected"), QS_CASES)
def test_parse_query(items: Items, expected: dict[str, Any]) -> None:
    assert parse_query(items) == expected


def test_parameter_limit() -> None:
    items = [(f"k{i}", "v") for i in range(1001)]
    parsed = parse_query(items)
    assert len(parsed) == 1000
    assert "k1000" not in parsed


def test_index_array_keeps_order_of_indices_not_arrival() -> None:
    items = [(f"a[{i}]", str(i)) for i in reversed(range(21))]
    assert parse_query(items) == {"a": [str(i) for i in range(21)]}


def test_long_lists_become_objects_that_parse_accepts() -> None:
    items = [(f"a[{i}]", str(i)) for i in range(25)]
    assert parse_query(items) == {"a": {str(i): str(i) for i in range(25)}}


ARGUMENTS: list[tuple[Items, Any]] = [
    ([], None),
    ([("other", "x"), ("filterx", "{}"), ("_format", "event-stream")], None),
    ([("filter", "")], None),
    ([("filter", "null")], None),
    ([("filter", "{}")], {}),
    ([("filter", '{"where":{"done":true},"limit":2}')], {"where": {"done": True}, "limit": 2}),
    ([("filter", ' {"a": 1} ')], {"a": 1}),
    ([("filter[where][done]", "true"), ("filter[limit]", "2")], {"where": {"done": "true"}, "limit": "2"}),
    ([("filter[where][title]", '{"a":1}')], {"where": {"title": '{"a":1}'}}),
    ([("options[where][title]", "t2")], {"where": {"title": "t2"}}),
    ([("filter[fields][0]", "id"), ("filter[fields][1]", "title")], {"fields": ["id", "title"]}),
    ([("where", '{"id":1}'), ("filter", "notjson")], {"id": 1}),
]


@pytest.mark.parametrize(("items", "expected"), ARGUMENTS)
def test_argument(items: Items, expected: Any) -> None:
    name = "options" if items and items[0][0].startswith("options") else "filter"
    if items and items[0][0] == "where":
        name = "where"
    assert argument(items, name) == expected


NOT_OBJECTS: list[Items] = [
    [("filter", "notjson")],
    [("filter", '{"where":')],
    [("filter", "[1]")],
    [("filter", "1")],
    [("filter", '"x"')],
    [("filter", "true")],
    [("filter", "NaN")],
    [("filter", '{"limit": NaN}')],
    [("filter", '{"limit": Infinity}')],
    [("filter", "{}"), ("filter", "{}")],
    [("filter", '{"a":1}'), ("filter[b]", "2")],
    [("filter[]", "1")],
    [("filter[0]", "1")],
]


@pytest.mark.parametrize("items", NOT_OBJECTS)
def test_argument_not_an_object(items: Items) -> None:
    with pytest.raises(FilterError) as caught:
        argument(items, "filter")
    assert str(caught.value) == "Value is not an object."


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ({"a": 1}, {"a": 1}), ('{"a":1}', {"a": 1}), ("null", None)],
)
def test_object_argument(value: Any, expected: Any) -> None:
    assert object_argument(value) == expected


@pytest.mark.parametrize("value", [[], [1], 1, True, "x", '"x"'])
def test_object_argument_rejects(value: Any) -> None:
    with pytest.raises(FilterError, match=r"^Value is not an object\.$"):
        object_argument(value)
