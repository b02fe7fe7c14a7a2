"""The read side of a model: find, findById, findOne, count, exists — all executed in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import read_transaction
from gateway.filters import Filter, Where, apply_filter, project, where_clause
from gateway.models.definition import ModelDef
from gateway.models.rows import to_json_row

Row = dict[str, Any]


class ModelReads:
    def __init__(self, model: ModelDef, table: Table, engine: AsyncEngine) -> None:
        self.model = model
        self.table = table
        self.engine = engine
        self._dialect = engine.dialect.name
        self._id_column = table.c[model.id_name]

    async def find(self, flt: Filter) -> list[Row]:
        query = apply_filter(select(self.table), flt, self.table, self._dialect)
        async with read_transaction(self.engine) as connection:
            rows = [to_json_row(self.model, r._mapping) for r in await connection.execute(query)]
        return [project(row, flt.fields) for row in rows]

    async def has_row(self, flt: Filter) -> bool:
        """Whether the filter selects a row, reading its id only (`RestLimits.beyond_page`'s probe)."""
        query = apply_filter(select(self._id_column), flt, self.table, self._dialect)
        async with read_transaction(self.engine) as connection:
            return (await connection.execute(query)).first() is not None

    async def find_by_id(self, id_value: Any, fields: tuple[str, ...] | None) -> Row | None:
        async with read_transaction(self.engine) as connection:
            found = (await connection.execute(select(self.table).where(self._id_column == id_value))).first()
        return None if found is None else project(to_json_row(self.model, found._mapping), fields)

    async def count(self, where: Where | None) -> int:
        query = select(func.count()).select_from(self.table)
        if where is not None:
            query = query.where(where_clause(where, self.table, self._dialect))
        async with read_transaction(self.engine) as connection:
            return int((await connection.execute(query)).scalar_one())

    async def exists(self, id_value: Any) -> bool:
        query = select(self._id_column).where(self._id_column == id_value)
        async with read_transaction(self.engine) as connection:
            return (await connection.execute(query)).first() is not None
