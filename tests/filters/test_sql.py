"""`sql`: where, order and paging on SQLite and PostgreSQL, checked against expected ids and LoopBack."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import create_engine, create_tables
from gateway.filters.ast import Filter, OrderBy
from gateway.filters.fields import project
from gateway.filters.parse import parse_filter, parse_where
from gateway.filters.querystring import argument
from gateway.filters.sql import apply_filter, where_clause
from gateway.models.definition import ModelDef
from gateway.models.loader import build_registry, parse_model
from gateway.models.rows import to_json_row
from gateway.models.tables import build_tables

from .cases import ROWS, TODO, WHERE_CASES, stored_row


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def load(engine: AsyncEngine, model: ModelDef, rows: Sequence[Mapping[str, Any]]) -> Table:
    """Create the model's table and insert the JSON-form rows."""
    tables = build_tables(build_registry([model]))
    await create_tables(engine, tables.metadata)
    table = tables.table(model)
    if rows:
        async with engine.begin() as connection:
            await connection.execute(insert(table), [stored_row(model, row) for row in rows])
    return table


async def ids(engine: AsyncEngine, table: Table, flt: Filter) -> list[Any]:
    statement = apply_filter(
        select(table.c[table.primary_key.columns.keys()[0]]), flt, table, engine.dialect.name
    )
    async with engine.connect() as connection:
        return list((await connection.execute(statement)).scalars())


async def test_where_cases(engine: AsyncEngine) -> None:
    """Every shared case selects the expected ids (the predicate tests run the same table)."""
    table = await load(engine, TODO, ROWS)
    failures = []
    async with engine.connect() as connection:
        for raw, expected in WHERE_CASES:
            where = parse_where(TODO, raw)
            statement = select(table.c.id)
            if where is not None:
                statement = statement.where(where_clause(where, table, engine.dialect.name))
            got = set((await connection.execute(statement)).scalars())
            if got != expected:
                failures.append((raw, sorted(expected), sorted(got)))
    assert failures == []


ORDERS: list[tuple[Any, list[int]]] = [
    (None, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("id DESC", [9, 8, 7, 6, 5, 4, 3, 2, 1]),
    ("title", [9, 8, 5, 3, 1, 6, 2, 4, 7]),
    ("title DESC", [7, 4, 2, 6, 1, 3, 5, 8, 9]),
    ("priority", [4, 9, 5, 8, 6, 2, 3, 1, 7]),
    ("priority DESC", [7, 1, 3, 2, 6, 8, 5, 4, 9]),
    ("done", [5, 9, 1, 3, 6, 8, 2, 4, 7]),
    ("done DESC", [2, 4, 7, 1, 3, 6, 8, 5, 9]),
    ("due", [3, 5, 6, 7, 9, 4, 2, 1, 8]),
    ("due DESC", [8, 1, 2, 4, 3, 5, 6, 7, 9]),
    ("done DESC, priority ASC", [4, 2, 7, 8, 6, 3, 1, 9, 5]),
    (["done", "title DESC"], [5, 9, 6, 1, 3, 8, 7, 4, 2]),
]


async def test_order_nulls_and_code_points(engine: AsyncEngine) -> None:
    """NULLs first ascending, last descending; strings by code point ("B" < "a" < "É" < "é"); id breaks ties."""
    table = await load(engine, TODO, ROWS)
    got = [(raw, await ids(engine, table, parse_filter(TODO, {"order": raw}))) for raw, _ in ORDERS]
    assert got == ORDERS


@pytest.fixture
async def icu_engine() -> AsyncIterator[AsyncEngine]:
    """PostgreSQL whose default collation is ICU's root locale, where "a" < "B": code point order must then
    come from the explicit COLLATE "C". (The shared fixtures' databases use C.UTF-8, which hides its absence.)"""
    admin_url = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"gwtest_icu_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C.UTF-8'"
        )
    finally:
        await admin.close()
    engine = create_engine(
        admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_code_point_order_under_a_linguistic_default_collation(icu_engine: AsyncEngine) -> None:
    async with icu_engine.connect() as connection:
        assert (await connection.execute(text("SELECT 'a' < 'B'"))).scalar_one() is True  # linguistic order
    table = await load(icu_engine, TODO, ROWS)
    assert [
        (raw, await ids(icu_engine, table, parse_filter(TODO, {"order": raw}))) for raw, _ in ORDERS
    ] == ORDERS
    async with icu_engine.connect() as connection:
        for raw, expected in WHERE_CASES:
            where = parse_where(TODO, raw)
            if where is not None:
                statement = select(table.c.id).where(where_clause(where, table, "postgresql"))
                assert set((await connection.execute(statement)).scalars()) == expected, raw


async def test_paging(engine: AsyncEngine) -> None:
    table = await load(engine, TODO, ROWS)
    assert await ids(engine, table, parse_filter(TODO, {"order": "priority", "limit": 3, "skip": 2})) == [
        5,
        8,
        6,
    ]
    assert await ids(engine, table, parse_filter(TODO, {"skip": 7})) == [8, 9]
    assert await ids(engine, table, parse_filter(TODO, {"offset": "8", "limit": "5"})) == [9]
    assert await ids(engine, table, parse_filter(TODO, {"limit": 0})) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert await ids(engine, table, parse_filter(TODO, {"skip": 20})) == []
    pages = [
        await ids(engine, table, Filter(order=(OrderBy("done"),), limit=2, skip=s)) for s in range(0, 9, 2)
    ]
    assert [row_id for page in pages for row_id in page] == [5, 9, 1, 3, 6, 8, 2, 4, 7]


async def test_string_ids_order_and_like(engine: AsyncEngine) -> None:
    model = parse_model(
        "t", {"name": "Tag", "properties": {"code": {"type": "string", "id": True}, "n": "number"}}
    )
    table = await load(engine, model, [{"code": c, "n": 1} for c in ["b", "B", "a", "é", "É", "a%"]])
    assert await ids(engine, table, parse_filter(model, {})) == ["B", "a", "a%", "b", "É", "é"]
    assert await ids(engine, table, parse_filter(model, {"order": "n DESC"})) == [
        "B",
        "a",
        "a%",
        "b",
        "É",
        "é",
    ]
    assert await ids(engine, table, parse_filter(model, {"where": {"code": {"like": "a\\%"}}})) == ["a%"]
    assert await ids(engine, table, parse_filter(model, {"where": {"code": {"gt": "a"}}})) == [
        "a%",
        "b",
        "É",
        "é",
    ]
    assert await ids(engine, table, parse_filter(model, {"where": {"code": {"ilike": "é"}}})) == ["É", "é"]


# LOOPBACK3.md §5, against the same seed: what LoopBack 3 answered is what we answer.
LOOPBACK_SEED = [
    {"title": "alpha", "done": False, "priority": 3, "id": 1},
    {"title": "beta", "done": True, "priority": 1, "id": 2},
    {"title": "gamma", "done": False, "priority": 2, "id": 3},
    {"title": "delta", "done": True, "id": 4},
]
LOOPBACK_FINDS: list[tuple[list[tuple[str, str]], list[dict[str, Any]]]] = [
    ([], LOOPBACK_SEED),
    (
        [("filter", '{"where":{"done":false},"order":"priority DESC","limit":1,"skip":0,"fields":["id","title"]}')],
        [{"title": "alpha", "id": 1}],
    ),
    (
        [("filter", '{"where":{"priority":{"gte":2}},"order":["priority ASC"],"fields":{"title":true,"priority":true}}')],
        [{"title": "gamma", "priority": 2}, {"title": "alpha", "priority": 3}],
    ),
    (
        [("filter", '{"where":{"or":[{"title":"beta"},{"priority":{"inq":[3]}}]},"limit":5,"skip":1}')],
        [LOOPBACK_SEED[1]],
    ),
    ([("filter[where][done]", "true"), ("filter[order]", "id DESC")], [LOOPBACK_SEED[3], LOOPBACK_SEED[1]]),
    ([("filter", '{"order":"priority"}')], [LOOPBACK_SEED[i] for i in (3, 1, 2, 0)]),
]  # fmt: skip


async def test_loopback_find_examples(engine: AsyncEngine) -> None:
    model = parse_model(
        "t", {"name": "Todo", "properties": {"title": "string", "done": "boolean", "priority": "number"}}
    )
    table = await load(engine, model, LOOPBACK_SEED)
    for query, expected in LOOPBACK_FINDS:
        flt = parse_filter(model, argument(query, "filter"))
        async with engine.connect() as connection:
            rows = (
                await connection.execute(apply_filter(select(table), flt, table, engine.dialect.name))
            ).mappings()
            assert [project(to_json_row(model, row), flt.fields) for row in rows] == expected, query
    where = parse_where(model, argument([("where", '{"done":true}')], "where"))
    assert where is not None
    async with engine.connect() as connection:
        count = select(func.count()).select_from(table).where(where_clause(where, table, engine.dialect.name))
        assert (await connection.execute(count)).scalar_one() == 2


def render(raw_filter: Any, dialect_name: str) -> str:
    table = build_tables(build_registry([TODO])).table(TODO)
    statement = apply_filter(select(table.c.id), parse_filter(TODO, raw_filter), table, dialect_name)
    dialect = PGDialect() if dialect_name == "postgresql" else SQLiteDialect()  # type: ignore[no-untyped-call]
    return str(statement.compile(dialect=dialect))


def test_rendered_sql_per_dialect() -> None:
    """The dialect-specific spellings, as the databases receive them."""
    title = {
        "where": {"title": {"gt": "a", "ilike": "A%", "nlike": "b", "regexp": "/^c/i"}},
        "order": "title DESC",
    }
    pg, lite = render(title, "postgresql"), render(title, "sqlite")
    assert '(todo.title COLLATE "C") > %(param_1)s AND' in pg
    assert "todo.title ILIKE %(title_1)s ESCAPE '\\'" in pg
    assert "(todo.title IS NULL OR todo.title NOT LIKE %(title_2)s ESCAPE '\\')" in pg
    assert "todo.title ~* %(title_3)s" in pg
    assert 'ORDER BY todo.title COLLATE "C" DESC NULLS LAST, todo.id ASC' in pg
    assert "todo.title > ?" in lite
    assert "gateway_lower(todo.title) LIKE ? ESCAPE '\\'" in lite
    assert "todo.title REGEXP ?" in lite
    assert "ORDER BY todo.title DESC NULLS LAST, todo.id ASC" in lite
    assert "COLLATE" not in render({"where": {"priority": {"gt": 1}}, "order": "due"}, "postgresql")


@pytest.mark.parametrize("dialect_name", ["postgresql", "sqlite"])
def test_empty_lists_are_constants(dialect_name: str) -> None:
    nothing = render({"where": {"done": {"inq": []}}}, dialect_name)
    everything = render({"where": {"done": {"nin": []}}}, dialect_name)
    assert " IN " not in nothing
    assert " IN " not in everything
    assert "WHERE false" in nothing or "WHERE 0" in nothing
    assert "WHERE" not in everything or "WHERE true" in everything or "WHERE 1" in everything
