"""The property that holds the filter back ends together, on SQLite and on PostgreSQL.

For generated rows (NULLs, negative and fractional numbers, booleans, dates at millisecond precision,
strings over a small alphabet with `%`, `_`, `\\` and non-ASCII) and generated filters (nested and/or,
every operator, values in JSON and in bracket-form text):
- the ids SQL selects are the ids for which the Python predicate accepts `to_json_row` of the stored row;
- `apply_filter`'s order and paging equal a reference sort written from LoopBack's rules.

Random values rarely equal stored ones, so half the values are placeholders (`FromRow`, `LikeFromRow`,
`RegexpFromRow`) resolved against the example's rows: a stored value in one of the forms a client may send,
or a pattern derived from a stored title. The strategies stay static, which keeps generation and shrinking
fast; each example loads its rows once and checks all its where clauses in one query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, case, delete, insert, literal, select
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
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
SHRINK_TIMEOUT = pytest.mark.timeout(900)
"""A passing run takes seconds, but shrinking a failure replays hundreds of examples against the database;
under the suite's 120 s timeout the counterexample would be lost to a bare timeout."""

# --- rows ----------------------------------------------------------------------------------------------

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

# --- values as clients send them -------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _milliseconds(moment: datetime) -> int:
    return round((moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _offset(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-2))).isoformat()


def _forms(prop: str, value: Any) -> list[Any]:
    """The ways a client may write a stored value in a filter: JSON, or bracket-form text."""
    if prop == "due":
        return [_iso(value), _offset(value), _milliseconds(value)]
    if prop == "done":
        return [value, "true" if value else "false", int(value)]
    if prop == "priority":
        return [value, str(value), *([int(value)] if value.is_integer() else [])]
    return [value, str(value)]


BASE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "title": TEXTS | NUMBERS,
    "done": st.booleans() | st.sampled_from(["true", "false", "1", "0"]),
    "priority": NUMBERS | NUMBERS.map(str),
    "due": DATES.map(_iso) | DATES.map(_milliseconds) | DATES.map(_offset),
    "id": st.integers(0, 11) | st.integers(0, 11).map(str),
}


@dataclass(frozen=True)
class FromRow:
    """The value of `prop` in row `index` (modulo the row count) in its `form`-th form, else `fallback`."""

    prop: str
    index: int
    form: int
    fallback: Any


@dataclass(frozen=True)
class LikeFromRow:
    """A LIKE pattern made from row `index`'s title: per character keep, swap case, `_` or `%`; `%` after."""

    index: int
    recipe: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class RegexpFromRow:
    """A regexp made from a slice of row `index`'s title, maybe case-swapped, anchored and flagged."""

    index: int
    start: int
    length: int
    swap: bool
    anchored: bool
    flags: str | None


def _values(prop: str) -> st.SearchStrategy[Any]:
    from_rows = st.builds(FromRow, st.just(prop), st.integers(0, 9), st.integers(0, 2), BASE_VALUES[prop])
    return BASE_VALUES[prop] | from_rows


LIKE_PATTERNS = st.lists(
    LETTERS.map(lambda c: "\\" + c if c in "%_\\" else c) | st.sampled_from(["%", "_"]), max_size=4
).map("".join)
LIKE_FROM_ROWS = st.builds(
    LikeFromRow,
    st.integers(0, 9),
    st.lists(st.tuples(st.sampled_from(["keep", "keep", "swap", "_", "%"]), st.booleans()), max_size=6).map(
        tuple
    ),
)

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
REGEXP_FROM_ROWS = st.builds(
    RegexpFromRow,
    st.integers(0, 9),
    st.integers(0, 4),
    st.integers(0, 4),
    st.booleans(),
    st.booleans(),
    _FLAGS,
)

# --- where clauses -------------------------------------------------------------------------------------

ALL_TYPES_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "inq", "nin")
PATTERN_OPS = ("like", "nlike", "ilike", "nilike", "regexp")
STRING_OPS = (*ALL_TYPES_OPS, *PATTERN_OPS, *PATTERN_OPS)  # patterns have the most corners: twice the weight


def _operand(prop: str, op: str) -> st.SearchStrategy[Any]:
    if op in ("eq", "neq"):
        return st.none() | _values(prop)
    if op == "between":
        return st.lists(_values(prop), min_size=2, max_size=2)
    if op in ("inq", "nin"):
        return st.lists(_values(prop), max_size=3) | _values(prop)
    if op == "regexp":
        return REGEXPS | REGEXP_FROM_ROWS
    if op in PATTERN_OPS:
        return LIKE_PATTERNS | LIKE_FROM_ROWS
    return _values(prop)


def _clauses(prop: str) -> st.SearchStrategy[dict[str, Any]]:
    ops = st.lists(st.sampled_from(STRING_OPS if prop == "title" else ALL_TYPES_OPS), min_size=1, max_size=2)
    explicit = ops.flatmap(lambda names: st.fixed_dictionaries({op: _operand(prop, op) for op in names}))
    value = st.sampled_from([explicit, explicit, explicit, _values(prop)]).flatmap(lambda form: form)  # 3:1
    return st.fixed_dictionaries({prop: value})


CONDITIONS = st.one_of([_clauses(prop) for prop in ("title", *PROPS)])  # strings twice: most operators
WHERES = st.recursive(
    CONDITIONS,
    lambda children: (
        st.lists(children, max_size=3).map(lambda items: {"and": items})
        | st.lists(children, max_size=3).map(lambda items: {"or": items})
        | st.lists(children, min_size=2, max_size=3).map(
            lambda items: {key: value for item in items for key, value in item.items()}
        )
    ),
    max_leaves=6,
)
ORDERS = st.fixed_dictionaries(
    {
        "order": st.lists(
            st.tuples(st.sampled_from(PROPS), st.sampled_from(["", " ASC", " DESC"])), max_size=3
        ).map(lambda terms: ", ".join(prop + direction for prop, direction in terms)),
        "limit": st.integers(0, 4),
        "skip": st.integers(0, 3),
    }
)
PATTERN_ROWS = st.lists(
    st.fixed_dictionaries({"title": st.none() | st.text(ALPHABET, max_size=6)}), max_size=12
)
PATTERN_WHERES = st.tuples(
    st.sampled_from(PATTERN_OPS[:4]), LIKE_PATTERNS | LIKE_FROM_ROWS | LIKE_FROM_ROWS
) | st.tuples(st.just("regexp"), REGEXPS | REGEXP_FROM_ROWS | REGEXP_FROM_ROWS)


def resolve(raw: Any, rows: list[dict[str, Any]]) -> Any:
    """The filter with its placeholders replaced by what they stand for in these rows."""
    if isinstance(raw, dict):
        return {key: resolve(value, rows) for key, value in raw.items()}
    if isinstance(raw, list):
        return [resolve(item, rows) for item in raw]
    if isinstance(raw, FromRow):
        present = [n for n, row in enumerate(rows, 1) if raw.prop == "id" or row.get(raw.prop) is not None]
        if not present:
            return raw.fallback
        chosen = present[raw.index % len(present)]
        forms = [chosen, str(chosen)] if raw.prop == "id" else _forms(raw.prop, rows[chosen - 1][raw.prop])
        return forms[raw.form % len(forms)]
    if isinstance(raw, (LikeFromRow, RegexpFromRow)):
        titles = [row["title"] for row in rows if row.get("title") is not None]
        title = titles[raw.index % len(titles)] if titles else ""
        return _like_from(title, raw) if isinstance(raw, LikeFromRow) else _regexp_from(title, raw)
    return raw


def _like_from(title: str, recipe: LikeFromRow) -> str:
    tokens = []
    for char, (choice, percent_after) in zip(
        title, recipe.recipe + (("keep", False),) * len(title), strict=False
    ):
        if choice in ("_", "%"):
            tokens.append(choice)
        else:
            char = char.swapcase() if choice == "swap" else char
            tokens.append("\\" + char if char in "%_\\" else char)
        if percent_after:
            tokens.append("%")
    return "".join(tokens)


def _regexp_from(title: str, recipe: RegexpFromRow) -> str:
    start = min(recipe.start, len(title))
    piece = title[start : start + recipe.length]
    body = "".join("\\" + c if c in _REGEX_META else c for c in (piece.swapcase() if recipe.swap else piece))
    anchors = ("^" if recipe.anchored and start == 0 else "", "$" if start + len(piece) == len(title) else "")
    return _regexp(anchors[0], body, anchors[1], False, recipe.flags)


# --- checks --------------------------------------------------------------------------------------------


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


async def check_wheres(
    connection: AsyncConnection, table: Table, json_rows: list[dict[str, Any]], raws: list[Any]
) -> None:
    """SQL selects exactly the rows the Python predicate accepts, for each where clause.

    All clauses run in one query, one `CASE WHEN <where> THEN 1 ELSE 0 END` column each, which keeps a row
    exactly when WHERE would (TRUE, not FALSE or NULL); one round trip per example keeps shrinking fast.
    The first clause also runs as a plain WHERE, so the two forms are checked against each other.
    """
    dialect = connection.dialect.name
    wheres = [parse_where(MODEL, raw) for raw in raws]
    columns = [case((where_clause(w, table, dialect), 1), else_=0) if w else literal(1) for w in wheres]
    result = (await connection.execute(select(table.c.id, *columns))).all()
    for index, (raw, where) in enumerate(zip(raws, wheres, strict=True)):
        in_sql = {row[0] for row in result if row[index + 1] == 1}
        matches = compile_predicate(MODEL, where)
        in_python = {row["id"] for row in json_rows if matches(row)}
        assert in_sql == in_python, f"where {raw!r} on {json_rows!r}"
    if wheres[0] is not None:
        statement = select(table.c.id).where(where_clause(wheres[0], table, dialect))
        in_where = set((await connection.execute(statement)).scalars())
        assert in_where == {row[0] for row in result if row[1] == 1}, (
            f"WHERE and CASE disagree on {raws[0]!r}"
        )


@pytest.fixture
async def items(database_url: str) -> AsyncIterator[tuple[AsyncEngine, Table]]:
    engine = create_engine(database_url)
    tables = build_tables(build_registry([MODEL]))
    await create_tables(engine, tables.metadata)
    yield engine, tables.table(MODEL)
    await engine.dispose()


@SHRINK_TIMEOUT
@SETTINGS
@given(
    rows=ROWS,
    wheres=st.lists(WHERES, min_size=15, max_size=20),
    orders=st.lists(ORDERS, min_size=1, max_size=3),
)
async def test_sql_and_predicate_agree(
    items: tuple[AsyncEngine, Table],
    rows: list[dict[str, Any]],
    wheres: list[Any],
    orders: list[dict[str, Any]],
) -> None:
    engine, table = items
    json_rows = await reload(engine, table, rows)
    async with engine.connect() as connection:
        await check_wheres(connection, table, json_rows, [resolve(raw, rows) for raw in wheres])
        for raw in orders:
            flt = parse_filter(MODEL, raw)
            statement = apply_filter(select(table.c.id), flt, table, engine.dialect.name)
            in_sql = list((await connection.execute(statement)).scalars())
            assert in_sql == reference_order(json_rows, flt), f"filter {raw!r} on {json_rows!r}"


@SHRINK_TIMEOUT
@SETTINGS
@given(rows=PATTERN_ROWS, patterns=st.lists(PATTERN_WHERES, min_size=40, max_size=40))
async def test_patterns_agree(
    items: tuple[AsyncEngine, Table], rows: list[dict[str, Any]], patterns: list[tuple[str, Any]]
) -> None:
    """The pattern operators alone, forty per example: escapes, wildcards, case folding, anchors, flags."""
    engine, table = items
    full_rows = [{"done": None, "priority": None, "due": None, **row} for row in rows]
    json_rows = await reload(engine, table, full_rows)
    raws = [{"title": {op: resolve(pattern, full_rows)}} for op, pattern in patterns]
    async with engine.connect() as connection:
        await check_wheres(connection, table, json_rows, raws)


RESOLVE_CASES: list[tuple[Any, list[dict[str, Any]], Any]] = [
    (FromRow("title", 3, 1, "x"), [{"title": None}, {"title": "a"}], "a"),
    (FromRow("title", 0, 0, "x"), [{"title": None}], "x"),
    (FromRow("due", 0, 2, "x"), [{"due": datetime(1970, 1, 1, 0, 0, 1)}], 1000),
    (FromRow("id", 1, 1, 0), [{"title": None}, {"title": None}], "2"),
    (LikeFromRow(0, (("swap", True), ("_", False), ("keep", False))), [{"title": "a%\\b"}], "A%_\\\\b"),
    (RegexpFromRow(0, 1, 2, False, True, "i"), [{"title": "a.b"}], "/\\.b$/i"),
    (RegexpFromRow(0, 0, 9, True, True, None), [{"title": "aB"}], "^Ab$"),
]


@pytest.mark.parametrize(("raw", "rows", "expected"), RESOLVE_CASES)
def test_placeholders_resolve(raw: Any, rows: list[dict[str, Any]], expected: Any) -> None:
    assert resolve({"p": [raw]}, rows) == {"p": [expected]}


def test_forms_are_what_parse_accepts() -> None:
    moment = datetime(2026, 1, 1, 12, 30, 0, 5000)
    parsed: Callable[[str, Any], Any] = lambda prop, value: parse_where(MODEL, {prop: value}).value  # type: ignore[union-attr]  # noqa: E731
    assert {parsed("due", form) for form in _forms("due", moment)} == {moment}
    assert {parsed("done", form) for form in _forms("done", False)} == {False}
    assert {parsed("priority", form) for form in _forms("priority", 2.0)} == {2.0}
