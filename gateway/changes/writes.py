"""Every write of a model, each in one transaction that changes the rows and records their changes.

This is the only module that writes model rows, so the outbox rule (row change and change object commit
together, or neither does) holds by construction. Rows are read `FOR UPDATE` before they change, which gives
each change its `before` row and serialises concurrent writers of one row, so their changes reach the outbox
(and the stream) in commit order. After a commit the relay is woken; until then nothing is visible.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.broker.base import Record
from gateway.changes import change as changes
from gateway.changes import sqlite_create
from gateway.changes.change import Change
from gateway.changes.outbox import record_changes
from gateway.changes.row_insert import insert_returning
from gateway.database import uses_one_hop_driver, write_transaction
from gateway.filters import And, Where, where_clause
from gateway.models.definition import ModelDef
from gateway.models.rows import to_json_row
from gateway.models.tables import EXTRA_COLUMN
from gateway.models.validation import InvalidInstance, build_values

Row = dict[str, Any]
IN_CHUNK = 1000


class WriteRejected(Exception):
    """A write that cannot be done as asked; the REST layer renders it in LoopBack's envelope."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


Committed = Callable[[str, Sequence[Record]], Awaitable[None]]
"""Told of each commit that wrote outbox rows to a stream (`Relay.committed`), with those rows when the write
knows their ids (the SQLite create), else with none."""


class ModelWrites:
    """The write operations of one model (LoopBack's create, patch, replace, upsert, updateAll, delete)."""

    def __init__(
        self,
        model: ModelDef,
        table: Table,
        outbox: Table,
        engine: AsyncEngine,
        committed: Committed,
    ) -> None:
        self.model = model
        self.table = table
        self.outbox = outbox
        self.engine = engine
        self._committed = committed
        self._id_column = table.c[model.id_name]
        self._scope: Where | None = None

    def scoped(self, scope: Where | None) -> ModelWrites:
        """These writes limited to the rows matching `scope` (a principal's `$owner` scope): rows outside it
        are treated as missing, checked inside each write's transaction."""
        if scope is None:
            return self
        scoped = copy.copy(self)
        scoped._scope = scope if self._scope is None else And((self._scope, scope))
        return scoped

    async def create(self, bodies: Sequence[Mapping[str, Any]]) -> list[Row]:
        """Create one row per body, all or none."""
        values = [build_values(self.model, body, allow_id=not self.model.force_id) for body in bodies]
        if uses_one_hop_driver(self.engine):
            try:
                created = await sqlite_create.create(self.engine, self.model, self.table, self.outbox, values)
            except sqlite_create.DuplicateRow as exc:
                raise self._duplicate(exc.values) from None
            if created.rows:
                await self._committed(self.model.stream, created.records)
            return created.rows
        rows: list[Row] = []
        async with self._transaction() as tx:
            for row_values in values:
                rows.append(await self._insert(tx.connection, row_values))
            tx.changes.extend(changes.created(self.model, row) for row in rows)
        return rows

    async def patch_by_id(self, id_value: Any, body: Mapping[str, Any]) -> Row:
        """LoopBack's `patchAttributes`: only the given properties change."""
        async with self._transaction() as tx:
            stored = await self._fetch_for_update(tx.connection, id_value)
            if stored is None:
                raise WriteRejected(404, f"could not find a model with id {id_value}", "MODEL_NOT_FOUND")
            row = await self._patch(tx, stored, body)
        return row

    async def replace_by_id(self, id_value: Any, body: Mapping[str, Any]) -> Row:
        """LoopBack's `replaceById`: the row becomes the body plus defaults; other properties are unset."""
        async with self._transaction() as tx:
            stored = await self._fetch_for_update(tx.connection, id_value)
            if stored is None:
                raise WriteRejected(404, f"Could not replace. Object with id {id_value} does not exist!")
            row = await self._replace(tx, stored, body)
        return row

    async def patch_or_create(self, body: Mapping[str, Any], id_value: Any | None) -> Row:
        return await self._upsert(body, id_value, replace=False)

    async def replace_or_create(self, body: Mapping[str, Any], id_value: Any | None) -> Row:
        return await self._upsert(body, id_value, replace=True)

    async def upsert_with_where(self, where: Where, body: Mapping[str, Any]) -> Row:
        """Patch the one row matching `where`, or create one from the body if none does."""
        async with self._transaction() as tx:
            query = select(self.table).where(self._where(where)).limit(2).with_for_update()
            matches = [dict(r._mapping) for r in await tx.connection.execute(query)]
            if len(matches) > 1:
                raise WriteRejected(
                    400, "There are multiple instances found.Upsert Operation will not be performed!"
                )
            if matches:
                return await self._patch(tx, matches[0], body)
            row = await self._insert(
                tx.connection, build_values(self.model, body, allow_id=not self.model.force_id)
            )
            tx.changes.append(changes.created(self.model, row))
        return row

    async def update_all(self, where: Where | None, body: Mapping[str, Any]) -> int:
        """LoopBack's `updateAll`: patch every matching row; one `update` change per row, none if none
        match."""
        if self.model.id_name in body:
            problem = InvalidInstance(self.model.name)
            problem.add(self.model.id_name, "absence", "can't be set", body[self.model.id_name])
            raise problem
        patch = build_values(self.model, body, base={}, allow_id=False)
        async with self._transaction() as tx:
            query = select(self.table).with_for_update().order_by(self._id_column)
            if where is not None or self._scope is not None:
                query = query.where(self._where(where))
            befores = {
                r._mapping[self.model.id_name]: dict(r._mapping) for r in await tx.connection.execute(query)
            }
            ids = list(befores)
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                for stored in await self._update_rows(tx.connection, chunk, patch, befores):
                    row = to_json_row(self.model, stored)
                    before = to_json_row(self.model, befores[stored[self.model.id_name]])
                    tx.changes.append(changes.updated(self.model, row, before, with_where=True))
        return len(ids)

    async def delete_by_id(self, id_value: Any) -> int:
        async with self._transaction() as tx:
            query = delete(self.table).where(self._id_column == id_value)
            if self._scope is not None:
                query = query.where(self._where(None))
            result = await tx.connection.execute(query.returning(*self.table.c))
            deleted = result.first()
            if deleted is not None:
                tx.changes.append(changes.removed(self.model, to_json_row(self.model, deleted._mapping)))
        return 0 if deleted is None else 1

    # -- building blocks --

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def _where(self, where: Where | None) -> Any:
        """SQL for `where` within this writer's scope (`where` None: the scope itself; never both None)."""
        if self._scope is not None:
            where = self._scope if where is None else And((where, self._scope))
        assert where is not None
        return where_clause(where, self.table, self.engine.dialect.name)

    async def _fetch_for_update(self, connection: AsyncConnection, id_value: Any) -> Row | None:
        query = select(self.table).where(self._id_column == id_value).with_for_update()
        if self._scope is not None:
            query = query.where(self._where(None))
        found = (await connection.execute(query)).first()
        return None if found is None else dict(found._mapping)

    async def _insert(self, connection: AsyncConnection, values: Mapping[str, Any]) -> Row:
        try:
            stored = await insert_returning(connection, self.table, values)
        except IntegrityError:
            raise self._duplicate(values) from None
        return to_json_row(self.model, stored)

    def _duplicate(self, values: Mapping[str, Any]) -> WriteRejected:
        id_value = values.get(self.model.id_name)
        return WriteRejected(409, f"Duplicate entry for {self.model.name}.{self.model.id_name} {id_value}")

    async def _update_rows(
        self,
        connection: AsyncConnection,
        ids: list[Any],
        patch: Mapping[str, Any],
        befores: Mapping[Any, Row],
    ) -> list[Row]:
        extra = patch.get(EXTRA_COLUMN)
        columns = {name: value for name, value in patch.items() if name != EXTRA_COLUMN}
        if not extra:
            if not columns:
                return [befores[i] for i in ids]
            result = await connection.execute(
                update(self.table).where(self._id_column.in_(ids)).values(**columns).returning(*self.table.c)
            )
            return [dict(r._mapping) for r in result]
        rows = []
        for id_value in ids:
            merged = {**(befores[id_value].get(EXTRA_COLUMN) or {}), **extra}
            result = await connection.execute(
                update(self.table)
                .where(self._id_column == id_value)
                .values(**columns, **{EXTRA_COLUMN: merged})
                .returning(*self.table.c)
            )
            rows.append(dict(result.one()._mapping))
        return rows

    async def _write_row(
        self, tx: _Transaction, stored: Row, body: Mapping[str, Any], values: Mapping[str, Any]
    ) -> Row:
        id_value = stored[self.model.id_name]
        body_id = values.get(self.model.id_name) if body.get(self.model.id_name) is not None else None
        if body_id is not None and body_id != id_value:
            raise WriteRejected(
                400, f"id property ({self.model.id_name}) cannot be updated from {id_value} to {body_id}"
            )
        columns = {name: value for name, value in values.items() if name != self.model.id_name}
        result = await tx.connection.execute(
            update(self.table).where(self._id_column == id_value).values(**columns).returning(*self.table.c)
        )
        row = to_json_row(self.model, result.one()._mapping)
        tx.changes.append(changes.updated(self.model, row, to_json_row(self.model, stored)))
        return row

    async def _patch(self, tx: _Transaction, stored: Row, body: Mapping[str, Any]) -> Row:
        return await self._write_row(
            tx, stored, body, build_values(self.model, body, base=stored, allow_id=True)
        )

    async def _replace(self, tx: _Transaction, stored: Row, body: Mapping[str, Any]) -> Row:
        return await self._write_row(tx, stored, body, build_values(self.model, body, allow_id=True))

    async def _upsert(self, body: Mapping[str, Any], id_value: Any | None, *, replace: bool) -> Row:
        async with self._transaction() as tx:
            stored = None if id_value is None else await self._fetch_for_update(tx.connection, id_value)
            if stored is not None:
                if replace:
                    return await self._replace(tx, stored, body)
                return await self._patch(tx, stored, body)
            if id_value is not None and self.model.force_id:
                what = "replace" if replace else "update attributes"
                raise WriteRejected(404, f"Could not {what}. Object with id {id_value} does not exist!")
            values = build_values(self.model, body, allow_id=True)
            row = await self._insert(tx.connection, values)
            tx.changes.append(changes.created(self.model, row))
        return row


class _Transaction:
    """One write transaction: rows and outbox commit together; the relay is woken after the commit."""

    def __init__(self, writes: ModelWrites) -> None:
        self._writes = writes
        self._context = write_transaction(writes.engine)
        self.changes: list[Change] = []
        self.connection: AsyncConnection

    async def __aenter__(self) -> _Transaction:
        self.connection = await self._context.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        writes = self._writes
        if exc_type is None and self.changes:
            try:
                await record_changes(self.connection, writes.outbox, writes.model.stream, self.changes)
            except BaseException as error:
                await self._context.__aexit__(type(error), error, error.__traceback__)
                raise
        await self._context.__aexit__(exc_type, exc, tb)
        if exc_type is None and self.changes:
            await writes._committed(writes.model.stream, ())
