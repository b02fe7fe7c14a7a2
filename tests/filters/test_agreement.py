"""The property that holds the filter back ends together, on SQLite and on PostgreSQL.

For generated rows (NULLs, negative and fractional numbers, booleans, dates at millisecond precision,
strings over a small alphabet with `%`, `_`, `\\` and non-ASCII) and generated filters (nested and/or,
every operator, values in JSON and in bracket-form text):
- the ids SQL selects are the ids for which the Python predicate accepts `to_json_row` of the stored row;
- `apply_filter`'s order and paging equal a reference sort written from LoopBack's rules.
Each example loads its rows once and checks about twenty filters against them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.database import create_engine, create_tables
from gateway.filters.ast import Filter
from gateway.filters.parse import parse_filter, parse_where
from gateway.filters.predicate import compile_predicate
from gateway.filters.sql import apply_filter, where_clause
from gateway.models.loader import build_registry, parse_model
from gateway.models.rows import to_json_row
from gateway.models.tables import build_tables

MODEL = parse_model(
    "agreement",
    {
        "name": "Item",
        "properties": {"title": "string", "done": "boolean", "priority": "number", "due": "date"},
    },
)
PROPS = ("title", "done", "priority", "due", "id")

# `İ` and `Σ` are left out: PostgreSQL lowercases them differently from Python (see gateway/filters/sql.py).
ALPHABET = "aAbBz %_\\éÉжЖß😀"
LETTERS = st.sampled_from(ALPHABET)
TEXTS = st.text(ALPHABET, max_size=4)
NUMBERS = st.sampled_from([-3, -2.5, -1, -0.5, 0, 0.25, 1, 2, 3, 1e6]) | st.integers(-3, 3)
SOME_DATES = [
    datetime(1000, 1, 1),
    datetime(1999, 12, 31, 23, 59, 59, 999000),
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, 0, 0, 0, 1000),
    datetime(9999, 12, 31, 23, 59, 59, 999000),
]
DATES = st.sampled_from(SOME_DATES) | st.datetimes(datetime(1000, 1, 1), datetime(9999, 12, 31)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)

ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "title": st.none() | TEXTS,
            "done": st.none() | st.booleans(),
            "priority": st.none() | NUMBERS.map(float),
            "due": st.none() | DATES,
        }
    ),
    max_size=10,
)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _milliseconds(moment: datetime) -> int:
    return round((moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _offset(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-2))).isoformat()


def _bracket_text(value: Any) -> Any:
    """A value as the bracket form sends it (always text), or unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def _as_sent(prop: str, value: Any) -> st.SearchStrategy[Any]:
    """A stored value the way a client may write it in a filter."""
    if prop == "due":
        forms = [_iso(value), _offset(value)] + ([_milliseconds(value)] if value.year > 1970 else [])
        return st.sampled_from(forms)
    if prop == "priority" and float(value).is_integer():
        return st.sampled_from([value, int(value), _bracket_text(value)])
    return st.sampled_from([value, _bracket_text(value)])


BASE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "title": TEXTS | NUMBERS,
    "done": st.booleans() | st.sampled_from(["true", "false", "1", "0"]),
    "priority": NUMBERS | NUMBERS.map(str),
    "due": DATES.map(_iso) | DATES.filter(lambda d: d.year > 1970).map(_milliseconds) | DATES.map(_offset),
    "id": st.integers(0, 11) | st.integers(0, 11).map(str),
}

LIKE_PATTERNS = st.lists(
    LETTERS.map(lambda c: "\\" + c if c in "%_\\" else c) | st.sampled_from(["%", "_"]), max_size=4
).map("".join)

_REGEX_META = frozenset(".^$*+?()[]{}|\\/")
_CLASSES = st.lists(st.sampled_from("aAbé%_ "), min_size=1, max_size=3, unique=True).map("".join)
_ATOMS = (
    LETTERS.map(lambda c: "\\" + c if c in _REGEX_META else c)
    | st.just(".")
    | _CLASSES.map(lambda chars: f"[{chars}]")
    | _CLASSES.map(lambda chars: f"[^{chars}]")
)
_PIECES = st.tuples(_ATOMS, st.sampled_from(["", "", "*", "+", "?", "{1,2}"])).map("".join)
_BODIES = st.lists(st.lists(_PIECES, min_size=1, max_size=3).map("".join), min_size=1, max_size=2).map(
    "|".join
)
_FLAGS = st.none() | st.sampled_from(["", "i", "gi", "m"])


def _regexp(start: str, body: str, end: str, group: bool, flags: str | None) -> str:
    pattern = start + (f"({body})" if group else body) + end
    return pattern if flags is None else f"/{pattern}/{flags}"


REGEXPS = st.builds(
    _regexp, st.sampled_from(["", "^"]), _BODIES, st.sampled_from(["", "$"]), st.booleans(), _FLAGS
)


@st.composite
def _like_from(draw: st.DrawFn, text: str) -> str:
    """A LIKE pattern likely to match `text`: characters kept, case-swapped or wildcarded, `%` inserted."""
    tokens = []
    for char in text:
        choice = draw(st.sampled_from(["keep", "keep", "swap", "_", "%"]))
        if choice == "swap":
            char = char.swapcase()
        if choice in ("_", "%"):
            tokens.append(choice)
        else:
            tokens.append("\\" + char if char in "%_\\" else char)
        if draw(st.booleans()) and draw(st.booleans()):
            tokens.append("%")
    return "".join(tokens)


@st.composite
def _regexp_from(draw: st.DrawFn, text: str) -> str:
    """A regexp likely to match `text`: a slice of it, escaped, maybe case-swapped, maybe anchored."""
    start = draw(st.integers(0, len(text)))
    piece = text[start : draw(st.integers(start, len(text)))]
    if draw(st.booleans()):
        piece = piece.swapcase()
    body = "".join("\\" + c if c in _REGEX_META else c for c in piece)
    anchors = (("^" if start == 0 else ""), ("$" if start + len(piece) == len(text) else ""))
    return _regexp(anchors[0] if draw(st.booleans()) else "", body, anchors[1], False, draw(_FLAGS))


ALL_TYPES_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "inq", "nin")
PATTERN_OPS = ("like", "nlike", "ilike", "nilike", "regexp")
STRING_OPS = (*ALL_TYPES_OPS, *PATTERN_OPS, *PATTERN_OPS)  # patterns have the most corners: twice the weight


def where_strategy(rows: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Where clauses over the model, half of whose values come from `rows`, so that many of them match."""
    present = {prop: [row[prop] for row in rows if row.get(prop) is not None] for prop in PROPS}
    present["id"] = list(range(1, len(rows) + 1))

    def values(prop: str) -> st.SearchStrategy[Any]:
        base = BASE_VALUES[prop]
        return (
            base | st.sampled_from(present[prop]).flatmap(lambda v: _as_sent(prop, v))
            if present[prop]
            else base
        )

    def operand(prop: str, op: str) -> st.SearchStrategy[Any]:
        if op in ("eq", "neq"):
            return st.none() | values(prop)
        if op == "between":
            return st.lists(values(prop), min_size=2, max_size=2)
        if op in ("inq", "nin"):
            return st.lists(values(prop), max_size=3) | values(prop)
        titles = st.sampled_from(present["title"]) if present["title"] else st.just("")
        if op == "regexp":
            return REGEXPS | titles.flatmap(_regexp_from)
        if op.endswith("like"):
            return LIKE_PATTERNS | titles.flatmap(_like_from)
        return values(prop)

    @st.composite
    def conditions(draw: st.DrawFn) -> dict[str, Any]:
        prop = draw(st.sampled_from(("title", *PROPS)))  # strings have the most operators: twice the weight
        ops = draw(
            st.lists(
                st.sampled_from(STRING_OPS if prop == "title" else ALL_TYPES_OPS), min_size=1, max_size=2
            )
        )
        clause = {op: draw(operand(prop, op)) for op in ops}
        if list(clause) == ["eq"] and draw(st.booleans()):
            return {prop: clause["eq"]}
        return {prop: clause}

    return st.recursive(
        conditions(),
        lambda children: (
            st.lists(children, max_size=3).map(lambda items: {"and": items})
            | st.lists(children, max_size=3).map(lambda items: {"or": items})
            | st.lists(children, min_size=2, max_size=3).map(_merged)
        ),
        max_leaves=6,
    )


def _merged(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: value for clause in clauses for key, value in clause.items()}


ORDERS = st.fixed_dictionaries(
    {
        "order": st.lists(
            st.tuples(st.sampled_from(PROPS), st.sampled_from(["", " ASC", " DESC"])), max_size=3
        ).map(lambda terms: ", ".join(prop + direction for prop, direction in terms)),
        "limit": st.integers(0, 4),
        "skip": st.integers(0, 3),
    }
)


def reference_order(rows: list[dict[str, Any]], flt: Filter) -> list[int]:
    """LoopBack's memory-connector rules: NULL first ascending, last descending; ties by id ascending."""
    ordered = sorted(rows, key=lambda row: row["id"])
    for term in reversed(flt.order):
        ordered.sort(
            key=lambda row: (0,) if row.get(term.prop) is None else (1, row[term.prop]),
            reverse=term.descending,
        )
    ids = [row["id"] for row in ordered][flt.skip :]
    return ids if flt.limit is None else ids[: flt.limit]


async def reload(engine: AsyncEngine, table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace the table's rows (ids 1..n); return them as stored and read back, in JSON form."""
    async with engine.begin() as connection:
        await connection.execute(delete(table))
        if rows:
            await connection.execute(insert(table), [{"id": n, **row} for n, row in enumerate(rows, 1)])
        stored = (await connection.execute(select(table))).mappings().all()
    return [to_json_row(MODEL, row) for row in stored]


async def check_where(
    connection: AsyncConnection, table: Table, json_rows: list[dict[str, Any]], raw: Any
) -> None:
    """SQL selects exactly the rows the Python predicate accepts."""
    where = parse_where(MODEL, raw)
    statement = select(table.c.id)
    if where is not None:
        statement = statement.where(where_clause(where, table, connection.dialect.name))
    in_sql = set((await connection.execute(statement)).scalars())
    matches = compile_predicate(MODEL, where)
    in_python = {row["id"] for row in json_rows if matches(row)}
    assert in_sql == in_python, f"where {raw!r} on {json_rows!r}"


@pytest.fixture
async def items(database_url: str) -> AsyncIterator[tuple[AsyncEngine, Table]]:
    engine = create_engine(database_url)
    tables = build_tables(build_registry([MODEL]))
    await create_tables(engine, tables.metadata)
    yield engine, tables.table(MODEL)
    await engine.dispose()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=ROWS, data=st.data())
async def test_sql_and_predicate_agree(
    items: tuple[AsyncEngine, Table], rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    wheres = data.draw(st.lists(where_strategy(rows), min_size=15, max_size=20), label="wheres")
    orders = data.draw(st.lists(ORDERS, min_size=1, max_size=3), label="orders")
    engine, table = items
    json_rows = await reload(engine, table, rows)
    async with engine.connect() as connection:
        for raw in wheres:
            await check_where(connection, table, json_rows, raw)
        for raw in orders:
            flt = parse_filter(MODEL, raw)
            statement = apply_filter(select(table.c.id), flt, table, engine.dialect.name)
            in_sql_order = list((await connection.execute(statement)).scalars())
            assert in_sql_order == reference_order(json_rows, flt), f"filter {raw!r} on {json_rows!r}"


PATTERN_ROWS = st.lists(
    st.fixed_dictionaries({"title": st.none() | st.text(ALPHABET, max_size=6)}), max_size=12
)


def pattern_strategy(titles: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """`{"title": {op: pattern}}` for the pattern operators, mostly derived from the stored titles."""
    derived_likes = st.sampled_from(titles).flatmap(_like_from) if titles else LIKE_PATTERNS
    derived_regexps = st.sampled_from(titles).flatmap(_regexp_from) if titles else REGEXPS
    likes = st.tuples(st.sampled_from(PATTERN_OPS[:4]), LIKE_PATTERNS | derived_likes | derived_likes)
    regexps = st.tuples(st.just("regexp"), REGEXPS | derived_regexps | derived_regexps)
    return (likes | regexps).map(lambda pair: {"title": {pair[0]: pair[1]}})


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=PATTERN_ROWS, data=st.data())
async def test_patterns_agree(
    items: tuple[AsyncEngine, Table], rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    """The pattern operators alone, thirty per example: escapes, wildcards, case folding, anchors, flags."""
    titles = [row["title"] for row in rows if row["title"] is not None]
    wheres = data.draw(st.lists(pattern_strategy(titles), min_size=30, max_size=30), label="wheres")
    engine, table = items
    json_rows = await reload(
        engine, table, [{"done": None, "priority": None, "due": None, **row} for row in rows]
    )
    async with engine.connect() as connection:
        for raw in wheres:
            await check_where(connection, table, json_rows, raw)
