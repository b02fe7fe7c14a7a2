"""`parse`: every operator, every coercion, and every message a client can get back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from gateway.filters.ast import And, Condition, Filter, FilterError, Op, Or, OrderBy, Regexp
from gateway.filters.parse import parse_fields, parse_filter, parse_order, parse_where
from gateway.models.loader import parse_model

from .cases import TODO

T, D, P, DUE, ID = "title", "done", "priority", "due", "id"


def c(prop: str, op: str, value: Any) -> Condition:
    return Condition(prop, Op(op), value)


# --- where: shapes -------------------------------------------------------------------------------------

WHERE_SHAPES: list[tuple[Any, Any]] = [
    (None, None),
    ({}, None),
    ({"and": []}, None),
    ({"title": "a"}, c(T, "eq", "a")),
    ({"title": None}, c(T, "eq", None)),
    ({"title": {"eq": None}}, c(T, "eq", None)),
    ({"title": {"neq": None}}, c(T, "neq", None)),
    ({"title": {"neq": "a"}}, c(T, "neq", "a")),
    ({"priority": {"gt": 1, "lt": 5}}, And((c(P, "gt", 1.0), c(P, "lt", 5.0)))),
    ({"title": "a", "done": True}, And((c(T, "eq", "a"), c(D, "eq", True)))),
    ({"or": [{"title": "a"}, {"title": "b"}]}, Or((c(T, "eq", "a"), c(T, "eq", "b")))),
    ({"and": [{"title": "a"}, {"done": True}]}, And((c(T, "eq", "a"), c(D, "eq", True)))),
    ({"or": []}, Or(())),
    ({"or": [{}]}, None),
    ({"and": [{"title": "a"}]}, c(T, "eq", "a")),
    ({"or": [{"title": "a"}]}, c(T, "eq", "a")),
    (
        {"title": "a", "and": [{"done": True}, {"priority": {"gte": 1, "lte": 2}}]},
        And((c(T, "eq", "a"), c(D, "eq", True), c(P, "gte", 1.0), c(P, "lte", 2.0))),
    ),
    (
        {"or": [{"and": [{"title": "a"}, {"done": False}]}, {"or": [{"id": 1}, {"id": 2}]}]},
        Or((And((c(T, "eq", "a"), c(D, "eq", False))), c(ID, "eq", 1), c(ID, "eq", 2))),
    ),
    ({"and": {"0": {"title": "a"}, "1": {"done": "true"}}}, And((c(T, "eq", "a"), c(D, "eq", True)))),
    ({"or": {"1": {"title": "b"}, "0": {"title": "a"}}}, Or((c(T, "eq", "a"), c(T, "eq", "b")))),
]


@pytest.mark.parametrize(("raw", "expected"), WHERE_SHAPES)
def test_where_shapes(raw: Any, expected: Any) -> None:
    assert parse_where(TODO, raw) == expected


# --- where: operators and coercion ---------------------------------------------------------------------

DATE = datetime(2026, 1, 2, 3, 4, 5, 678000)
OPERATORS: list[tuple[str, Any, Condition]] = [
    # strings: str, or a number printed as JavaScript prints it
    (T, {"eq": "x"}, c(T, "eq", "x")),
    (T, 5, c(T, "eq", "5")),
    (T, 2.0, c(T, "eq", "2")),
    (T, 2.5, c(T, "eq", "2.5")),
    (T, {"gt": "b"}, c(T, "gt", "b")),
    (T, {"gte": "b"}, c(T, "gte", "b")),
    (T, {"lt": "b"}, c(T, "lt", "b")),
    (T, {"lte": "b"}, c(T, "lte", "b")),
    (T, {"between": ["a", "c"]}, c(T, "between", ("a", "c"))),
    (T, {"inq": ["a", 1]}, c(T, "inq", ("a", "1"))),
    (T, {"nin": ["a"]}, c(T, "nin", ("a",))),
    (T, {"inq": "a"}, c(T, "inq", ("a",))),
    (T, {"inq": []}, c(T, "inq", ())),
    (T, {"nin": {"0": "a", "1": "b"}}, c(T, "nin", ("a", "b"))),
    (T, {"like": "a%_"}, c(T, "like", "a%_")),
    (T, {"nlike": "a\\%"}, c(T, "nlike", "a\\%")),
    (T, {"ilike": "A%"}, c(T, "ilike", "A%")),
    (T, {"nilike": "a\\\\"}, c(T, "nilike", "a\\\\")),
    (T, {"like": ""}, c(T, "like", "")),
    (T, {"regexp": "^a"}, c(T, "regexp", Regexp("^a"))),
    (T, {"regexp": "/^a/i"}, c(T, "regexp", Regexp("^a", ignore_case=True))),
    (T, {"regexp": "/^a/gm"}, c(T, "regexp", Regexp("^a"))),
    (T, {"regexp": "/^a/mig"}, c(T, "regexp", Regexp("^a", ignore_case=True))),
    (T, {"regexp": "/a/"}, c(T, "regexp", Regexp("a"))),
    (T, {"regexp": "/a/b/"}, c(T, "regexp", Regexp("a/b"))),
    (T, {"regexp": "a/b"}, c(T, "regexp", Regexp("a/b"))),
    (T, {"regexp": "/"}, c(T, "regexp", Regexp("/"))),
    (T, {"regexp": ""}, c(T, "regexp", Regexp(""))),
    # numbers: int, float or numeric text, always as float
    (P, 1, c(P, "eq", 1.0)),
    (P, "1", c(P, "eq", 1.0)),
    (P, "-2.5", c(P, "eq", -2.5)),
    (P, "+3", c(P, "eq", 3.0)),
    (P, ".5", c(P, "eq", 0.5)),
    (P, "1e3", c(P, "eq", 1000.0)),
    (P, "2.", c(P, "eq", 2.0)),
    (P, {"gt": "0"}, c(P, "gt", 0.0)),
    (P, {"between": ["1", 2]}, c(P, "between", (1.0, 2.0))),
    (P, {"inq": ["1", 2, 3.5]}, c(P, "inq", (1.0, 2.0, 3.5))),
    (P, {"neq": 0}, c(P, "neq", 0.0)),
    # booleans
    (D, True, c(D, "eq", True)),
    (D, "true", c(D, "eq", True)),
    (D, "false", c(D, "eq", False)),
    (D, "1", c(D, "eq", True)),
    (D, "0", c(D, "eq", False)),
    (D, 1, c(D, "eq", True)),
    (D, 0, c(D, "eq", False)),
    (D, {"inq": ["true", False]}, c(D, "inq", (True, False))),
    (D, {"gt": False}, c(D, "gt", False)),
    # dates: ISO text or milliseconds, to naive UTC at millisecond precision
    (DUE, "2026-01-02T03:04:05.678Z", c(DUE, "eq", DATE)),
    (DUE, "2026-01-02T05:04:05.678+02:00", c(DUE, "eq", DATE)),
    (DUE, "2026-01-02T03:04:05.678999", c(DUE, "eq", DATE)),
    (DUE, 1767323045678, c(DUE, "eq", DATE)),
    (DUE, 0, c(DUE, "eq", datetime(1970, 1, 1))),
    (DUE, "2026-01-02", c(DUE, "eq", datetime(2026, 1, 2))),
    (DUE, {"between": ["2026-01-01", 0]}, c(DUE, "between", (datetime(2026, 1, 1), datetime(1970, 1, 1)))),
    # the numeric id: integers only, as int
    (ID, 3, c(ID, "eq", 3)),
    (ID, "3", c(ID, "eq", 3)),
    (ID, "-3", c(ID, "eq", -3)),
    (ID, 3.0, c(ID, "eq", 3)),
    (ID, {"inq": ["1", 2]}, c(ID, "inq", (1, 2))),
    (ID, {"gte": 2**63 - 1}, c(ID, "gte", 2**63 - 1)),
]


@pytest.mark.parametrize(("prop", "raw", "expected"), OPERATORS)
def test_operators_and_coercion(prop: str, raw: Any, expected: Condition) -> None:
    where = parse_where(TODO, {prop: raw})
    assert where == expected
    assert isinstance(where, Condition)
    assert type(where.value) is type(expected.value)


def test_string_id_and_string_id_operators() -> None:
    model = parse_model("t", {"name": "Tag", "properties": {"code": {"type": "string", "id": True}}})
    assert parse_where(model, {"code": 7}) == c("code", "eq", "7")
    assert parse_where(model, {"code": {"like": "a%"}}) == c("code", "like", "a%")


# --- where: errors -------------------------------------------------------------------------------------

WHERE_ERRORS: list[tuple[Any, str]] = [
    ("x", 'The where clause "x" is not an object'),
    ([{"title": "a"}], 'The where clause [{"title":"a"}] is not an object'),
    ({"or": [1]}, "The where clause 1 is not an object"),
    ({"and": [{"title": "a"}, "b"]}, 'The where clause "b" is not an object'),
    (
        {"and": "x"},
        'The and operator has invalid clauses "x": Value is not an array or object with sequential numeric indices',
    ),
    (
        {"or": {"1": {"title": "a"}}},
        'The or operator has invalid clauses {"1":{"title":"a"}}: '
        "Value is not an array or object with sequential numeric indices",
    ),
    ({"nope": 1}, 'Property "nope" is not defined for Todo model'),
    ({"or": [{"Title": "a"}]}, 'Property "Title" is not defined for Todo model'),
    ({"nor": [{"title": "a"}]}, 'Property "nor" is not defined for Todo model'),
    ({"secret": "x"}, 'Properties "secret" are not allowed in query'),
    ({"meta": {"a": 1}}, 'Property "meta" of type object cannot be used in a filter'),
    ({"tags": "a"}, 'Property "tags" of type array cannot be used in a filter'),
    ({"title": {}}, "The title property has invalid clause {}: no operator given"),
    ({"title": {"foo": 1}}, 'The title property has invalid clause {"foo":1}: unknown operator "foo"'),
    ({"title": {"gt": "a", "and": 1}}, 'The title property has invalid clause {"gt":"a","and":1}: unknown operator "and"'),
    ({"title": {"$gt": "a"}}, 'The title property has invalid clause {"$gt":"a"}: unknown operator "$gt"'),
    ({"title": {"EQ": "a"}}, 'The title property has invalid clause {"EQ":"a"}: unknown operator "EQ"'),
    # null is only for eq / neq
    ({"title": {"gt": None}}, 'The title property has invalid clause {"gt":null}: Expected a value, received null'),
    ({"title": {"like": None}}, 'The title property has invalid clause {"like":null}: Expected a value, received null'),
    ({"title": {"inq": None}}, 'The title property has invalid clause {"inq":null}: Expected a value, received null'),
    ({"title": {"inq": ["a", None]}}, 'The title property has invalid clause {"inq":["a",null]}: Expected a value, received null'),
    ({"title": {"between": [None, "a"]}}, 'The title property has invalid clause {"between":[null,"a"]}: Expected a value, received null'),
    # between takes exactly two
    ({"priority": {"between": [1]}}, 'The priority property has invalid clause {"between":[1]}: Expected precisely 2 values, received 1'),
    ({"priority": {"between": [1, 2, 3]}}, 'The priority property has invalid clause {"between":[1,2,3]}: Expected precisely 2 values, received 3'),
    ({"priority": {"between": 1}}, 'The priority property has invalid clause {"between":1}: Expected precisely 2 values, received 1'),
    ({"priority": {"between": []}}, 'The priority property has invalid clause {"between":[]}: Expected precisely 2 values, received 0'),
    ({"priority": {"inq": {"0": 1, "2": 2}}}, 'The priority property has invalid clause {"inq":{"0":1,"2":2}}: Value is not an array or object with sequential numeric indices'),
    # coercion failures
    ({"title": True}, "The title property has invalid clause true: Expected a string"),
    ({"title": ["a"]}, 'The title property has invalid clause ["a"]: Expected a string'),
    ({"title": {"inq": [{"a": 1}]}}, 'The title property has invalid clause {"inq":[{"a":1}]}: Expected a string'),
    ({"title": "a\x00b"}, 'The title property has invalid clause "a\\u0000b": Strings cannot contain the NUL character'),
    ({"priority": "abc"}, 'The priority property has invalid clause "abc": Expected a number'),
    ({"priority": ""}, 'The priority property has invalid clause "": Expected a number'),
    ({"priority": " 1"}, 'The priority property has invalid clause " 1": Expected a number'),
    ({"priority": "NaN"}, 'The priority property has invalid clause "NaN": Expected a number'),
    ({"priority": "Infinity"}, 'The priority property has invalid clause "Infinity": Expected a number'),
    ({"priority": "0x10"}, 'The priority property has invalid clause "0x10": Expected a number'),
    ({"priority": True}, "The priority property has invalid clause true: Expected a number"),
    ({"priority": float("inf")}, "The priority property has invalid clause Infinity: Expected a number"),
    ({"priority": 10**400}, f"The priority property has invalid clause {10**400}: Expected a number"),
    ({"priority": "1e400"}, 'The priority property has invalid clause "1e400": Expected a number'),
    ({"priority": {"gt": [1]}}, 'The priority property has invalid clause {"gt":[1]}: Expected a number'),
    ({"done": "yes"}, 'The done property has invalid clause "yes": Expected a boolean'),
    ({"done": "TRUE"}, 'The done property has invalid clause "TRUE": Expected a boolean'),
    ({"done": 2}, "The done property has invalid clause 2: Expected a boolean"),
    ({"done": [True]}, "The done property has invalid clause [true]: Expected a boolean"),
    ({"done": {"inq": ["x"]}}, 'The done property has invalid clause {"inq":["x"]}: Expected a boolean'),
    ({"due": "yesterday"}, 'The due property has invalid clause "yesterday": Expected a date'),
    ({"due": True}, "The due property has invalid clause true: Expected a date"),
    ({"due": 1e20}, "The due property has invalid clause 1e+20: Expected a date"),
    ({"due": {"a": 1}}, 'The due property has invalid clause {"a":1}: unknown operator "a"'),
    ({"due": ["2026-01-01"]}, 'The due property has invalid clause ["2026-01-01"]: Expected a date'),
    ({"id": "abc"}, 'The id property has invalid clause "abc": Expected an integer id'),
    ({"id": "1.5"}, 'The id property has invalid clause "1.5": Expected an integer id'),
    ({"id": 1.5}, "The id property has invalid clause 1.5: Expected an integer id"),
    ({"id": True}, "The id property has invalid clause true: Expected an integer id"),
    ({"id": 2**63}, f"The id property has invalid clause {2**63}: Expected an integer id"),
    # like / regexp: strings only, on string properties only
    ({"priority": {"like": "1%"}}, 'The priority property has invalid clause {"like":"1%"}: like applies only to string properties'),
    ({"done": {"regexp": "t"}}, 'The done property has invalid clause {"regexp":"t"}: regexp applies only to string properties'),
    ({"id": {"nilike": "1"}}, 'The id property has invalid clause {"nilike":"1"}: nilike applies only to string properties'),
    ({"title": {"like": 5}}, 'The title property has invalid clause {"like":5}: Expected a string'),
    ({"title": {"ilike": ["a"]}}, 'The title property has invalid clause {"ilike":["a"]}: Expected a string'),
    ({"title": {"like": "a\\"}}, 'The title property has invalid clause {"like":"a\\\\"}: LIKE pattern must not end with the escape character \\'),
    ({"title": {"nlike": "\\\\\\"}}, 'The title property has invalid clause {"nlike":"\\\\\\\\\\\\"}: LIKE pattern must not end with the escape character \\'),
    ({"title": {"regexp": 1}}, 'The title property has invalid clause {"regexp":1}: Expected a string'),
    ({"title": {"regexp": "/a/x"}}, 'The title property has invalid clause {"regexp":"/a/x"}: Invalid regex flags: x'),
    ({"title": {"regexp": "/a/yix"}}, 'The title property has invalid clause {"regexp":"/a/yix"}: Invalid regex flags: x,y'),
    ({"title": {"regexp": "("}}, 'The title property has invalid clause {"regexp":"("}: Invalid regular expression: missing ): ('),
    ({"title": {"regexp": "/a(/i"}}, 'The title property has invalid clause {"regexp":"/a(/i"}: Invalid regular expression: missing ): a('),
    ({"title": {"regexp": "*"}}, 'The title property has invalid clause {"regexp":"*"}: Invalid regular expression: no argument for repetition operator: *'),
    # RE2 runs every pattern in linear time; what needs backtracking is refused, never run
    ({"title": {"regexp": "(a)\\1"}}, 'The title property has invalid clause {"regexp":"(a)\\\\1"}: Invalid regular expression: invalid escape sequence: \\1'),
    ({"title": {"regexp": "a(?=b)"}}, 'The title property has invalid clause {"regexp":"a(?=b)"}: Invalid regular expression: invalid perl operator: (?='),
    ({"title": {"regexp": "a\x00"}}, 'The title property has invalid clause {"regexp":"a\\u0000"}: Strings cannot contain the NUL character'),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "message"), WHERE_ERRORS)
def test_where_errors(raw: Any, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_where(TODO, raw)
    assert str(caught.value) == message


def test_filter_error_is_a_value_error() -> None:
    assert issubclass(FilterError, ValueError)


# --- order ---------------------------------------------------------------------------------------------

ORDERS: list[tuple[Any, tuple[OrderBy, ...]]] = [
    (None, ()),
    ("", ()),
    ([], ()),
    ("title", (OrderBy(T),)),
    ("title ASC", (OrderBy(T),)),
    ("title DESC", (OrderBy(T, descending=True),)),
    ("title desc", (OrderBy(T, descending=True),)),
    ("title Asc", (OrderBy(T),)),
    ("  title   DESC  ", (OrderBy(T, descending=True),)),
    ("title ASC, priority DESC", (OrderBy(T), OrderBy(P, descending=True))),
    ("title,priority DESC,,id", (OrderBy(T), OrderBy(P, descending=True), OrderBy(ID))),
    (["title", "priority DESC"], (OrderBy(T), OrderBy(P, descending=True))),
    (["title DESC, done", "id"], (OrderBy(T, descending=True), OrderBy(D), OrderBy(ID))),
    ({"0": "due", "1": "id DESC"}, (OrderBy(DUE), OrderBy(ID, descending=True))),
    ("title, title DESC", (OrderBy(T), OrderBy(T, descending=True))),
]


@pytest.mark.parametrize(("raw", "expected"), ORDERS)
def test_order(raw: Any, expected: tuple[OrderBy, ...]) -> None:
    assert parse_order(TODO, raw) == expected


ORDER_ERRORS: list[tuple[Any, str]] = [
    ("priority SIDEWAYS", 'The order "priority SIDEWAYS" has invalid direction'),
    ("title ASC, priority up", 'The order "priority up" has invalid direction'),
    ("title ASC extra", 'The order "title ASC extra" has invalid direction'),
    (["id", "title DOWN"], 'The order "title DOWN" has invalid direction'),
    (5, "The order 5 is not valid"),
    ([5], "The order 5 is not valid"),
    (["title", None], "The order null is not valid"),
    ({"a": "title"}, 'The order {"a":"title"} is not valid'),
    ("nope", 'Property "nope" is not defined for Todo model'),
    ("nope DESC", 'Property "nope" is not defined for Todo model'),
    ("meta", 'Property "meta" of type object cannot be used in a filter'),
    ("secret DESC", 'Properties "secret" are not allowed in query'),
]


@pytest.mark.parametrize(("raw", "message"), ORDER_ERRORS)
def test_order_errors(raw: Any, message: str) -> None:
    with pytest.raises(FilterError, match=None) as caught:
        parse_order(TODO, raw)
    assert str(caught.value) == message


# --- fields --------------------------------------------------------------------------------------------

ALL_VISIBLE = ("title", "done", "priority", "due", "tags", "meta", "id")
FIELDS: list[tuple[Any, tuple[str, ...] | None]] = [
    (None, None),
    ("", None),
    ([], None),
    ({}, None),
    (["id", "title"], ("title", "id")),
    (["priority", "title", "title"], ("title", "priority")),
    ("title", ("title",)),
    (["title", "nope"], ("title",)),
    (["nope"], ()),
    (["title", 5, None], ("title",)),
    (["secret", "id"], ("id",)),
    ({"title": True, "priority": True}, ("title", "priority")),
    ({"priority": True, "title": True}, ("title", "priority")),
    ({"title": "true", "id": "1"}, ("title", "id")),
    ({"title": True, "done": False}, ("title",)),
    ({"title": 1, "nope": True}, ("title",)),
    ({"title": False}, ("done", "priority", "due", "tags", "meta", "id")),
    ({"title": "false", "id": "0"}, ("done", "priority", "due", "tags", "meta")),
    ({"title": 0, "done": None, "priority": ""}, ("due", "tags", "meta", "id")),
    ({"nope": False}, ALL_VISIBLE),
    ({"secret": True}, ()),
    ({"secret": False}, ALL_VISIBLE),
    ({"0": "title", "1": "id"}, ()),  # object form: "0" and "1" are (unknown) names
]


@pytest.mark.parametrize(("raw", "expected"), FIELDS)
def test_fields(raw: Any, expected: tuple[str, ...] | None) -> None:
    assert parse_fields(TODO, raw) == expected


@pytest.mark.parametrize("raw", [5, True, 1.5])
def test_fields_errors(raw: Any) -> None:
    with pytest.raises(FilterError) as caught:
        parse_fields(TODO, raw)
    assert str(caught.value) == f"The fields parameter {str(raw).lower()} is not valid"


# --- the whole filter ----------------------------------------------------------------------------------


def test_filter_defaults() -> None:
    assert parse_filter(TODO, None) == Filter()
    assert parse_filter(TODO, {}) == Filter(where=None, order=(), limit=None, skip=0, fields=None)


def test_filter_all_keys() -> None:
    raw = {
        "where": {"done": "false"},
        "order": "priority DESC",
        "limit": "1",
        "skip": "2",
        "fields": ["id", "title"],
        "include": [],
        "near": "ignored",
        "custom": {"also": "ignored"},
    }
    assert parse_filter(TODO, raw) == Filter(
        where=c(D, "eq", False),
        order=(OrderBy(P, descending=True),),
        limit=1,
        skip=2,
        fields=("title", "id"),
    )


@pytest.mark.parametrize("raw", [[], "x", 5, True, [{"where": {}}]])
def test_filter_must_be_an_object(raw: Any) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(TODO, raw)
    assert str(caught.value) == "Value is not an object."


PAGING: list[tuple[dict[str, Any], int | None, int]] = [
    ({"limit": 10}, 10, 0),
    ({"limit": "10"}, 10, 0),
    ({"limit": 10.0}, 10, 0),
    ({"limit": 0}, None, 0),
    ({"limit": "0"}, None, 0),
    ({"limit": None}, None, 0),
    ({"limit": ""}, None, 0),
    ({"skip": 5}, None, 5),
    ({"skip": "5"}, None, 5),
    ({"offset": 5}, None, 5),
    ({"offset": "7", "limit": 2}, 2, 7),
    ({"skip": 2, "offset": 3}, None, 2),
    ({"skip": 0, "offset": 3}, None, 3),
    ({"skip": "0"}, None, 0),
    ({"limit": 2**53 - 1}, 2**53 - 1, 0),
]


@pytest.mark.parametrize(("raw", "limit", "skip"), PAGING)
def test_paging(raw: dict[str, Any], limit: int | None, skip: int) -> None:
    flt = parse_filter(TODO, raw)
    assert (flt.limit, flt.skip) == (limit, skip)


PAGING_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"limit": -1}, "The limit parameter -1 is not valid"),
    ({"limit": "-1"}, 'The limit parameter "-1" is not valid'),
    ({"limit": "abc"}, 'The limit parameter "abc" is not valid'),
    ({"limit": "1.5"}, 'The limit parameter "1.5" is not valid'),
    ({"limit": 1.5}, "The limit parameter 1.5 is not valid"),
    ({"limit": True}, "The limit parameter true is not valid"),
    ({"limit": [1]}, "The limit parameter [1] is not valid"),
    ({"limit": {"a": 1}}, 'The limit parameter {"a":1} is not valid'),
    ({"limit": 2**53}, f"The limit parameter {2**53} is not valid"),
    ({"limit": "١٢"}, 'The limit parameter "١٢" is not valid'),
    ({"skip": -2}, "The skip parameter -2 is not valid"),
    ({"skip": "x"}, 'The skip parameter "x" is not valid'),
    ({"offset": -2}, "The offset parameter -2 is not valid"),
    ({"offset": False}, "The offset parameter false is not valid"),
]


@pytest.mark.parametrize(("raw", "message"), PAGING_ERRORS)
def test_paging_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(TODO, raw)
    assert str(caught.value) == message


INCLUDES: list[tuple[Any, str | None]] = [
    (None, None),
    ("", None),
    ([], None),
    ({}, None),
    ("owner", "owner"),
    (["posts", "owner"], "posts"),
    ([[], "owner"], "owner"),
    ({"owner": "posts"}, "owner"),
    ({"relation": "owner", "scope": {"fields": ["id"]}}, "owner"),
    ([{"posts": "images"}, "owner"], "posts"),
    ({"0": "owner"}, "0"),
]


@pytest.mark.parametrize(("raw", "relation"), INCLUDES)
def test_include(raw: Any, relation: str | None) -> None:
    if relation is None:
        assert parse_filter(TODO, {"include": raw}) == Filter()
        return
    with pytest.raises(FilterError) as caught:
        parse_filter(TODO, {"include": raw})
    assert str(caught.value) == f'Relation "{relation}" is not defined for Todo model'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"where": {"id": 1}, "order": "id UP"}, 'The order "id UP" has invalid direction'),
        ({"where": {"x": 1}}, 'Property "x" is not defined for Todo model'),
        ({"fields": 3}, "The fields parameter 3 is not valid"),
    ],
)
def test_errors_surface_from_every_part_of_the_filter(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(TODO, raw)
    assert str(caught.value) == message


def test_parsed_filters_are_hashable_for_caching() -> None:
    raw = {
        "where": {
            "or": [{"title": {"inq": ["a"]}}, {"due": {"between": [0, 1]}}, {"title": {"regexp": "/a/i"}}]
        }
    }
    first, second = parse_filter(TODO, raw), parse_filter(TODO, raw)
    assert first == second
    assert hash(first) == hash(second)
