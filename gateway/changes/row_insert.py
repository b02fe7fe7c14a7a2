"""A create's INSERT ... RETURNING, sent to the database driver directly (`gateway.changes.driver`).

Every create runs one. Through SQLAlchemy Core it was most of a create's CPU: building the `insert()`,
the compiled-cache lookup, the execution context and the result (loadtests/RESULTS.md, issue 16). Here the
SQL for each set of columns is built once and kept in the table's `info`, and the values go through the
column types' own bind and result processors for the dialect, so a row stored and read back here is
exactly what SQLAlchemy would have stored and read (JSON, dates on SQLite, booleans).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.changes.driver import driver_of, translated

_Processor = Callable[[Any], Any] | None


class InsertStatement:
    """`INSERT INTO table (columns) VALUES (...) RETURNING every column`, for one set of columns."""

    def __init__(self, table: Table, dialect: Dialect, columns: tuple[str, ...]) -> None:
        quote = dialect.identifier_preparer
        if dialect.name == "postgresql":
            placeholders = [f"${n}" for n in range(1, len(columns) + 1)]
        else:
            placeholders = ["?"] * len(columns)
        names = ", ".join(quote.format_column(table.c[name]) for name in columns)
        returned = ", ".join(quote.format_column(column) for column in table.c)
        values = f"VALUES ({', '.join(placeholders)})" if columns else "DEFAULT VALUES"
        into = f"({names}) " if columns else ""
        self.sql = f"INSERT INTO {quote.format_table(table)} {into}{values} RETURNING {returned}"
        self.binds: list[_Processor] = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
        ]
        self.names = [column.name for column in table.c]
        self._returned = list(table.c)
        self._dialect = dialect
        self.results: list[_Processor] | None = None
        """Set at the first execution: PostgreSQL's processors depend on the types the driver returns."""

    def set_result_types(self, types: Sequence[Any]) -> None:
        dialect = self._dialect
        self.results = [
            column.type.dialect_impl(dialect).result_processor(dialect, coltype)
            for column, coltype in zip(self._returned, types, strict=True)
        ]

    @classmethod
    def of(cls, table: Table, dialect: Dialect, columns: tuple[str, ...]) -> InsertStatement:
        key = ("gateway_insert_sql", dialect.name, columns)
        statement: InsertStatement | None = table.info.get(key)
        if statement is None:
            statement = table.info[key] = cls(table, dialect, columns)
        return statement

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        return [
            value if bind is None else bind(value)
            for value, bind in zip(values.values(), self.binds, strict=True)
        ]

    def row(self, returned: Any) -> dict[str, Any]:
        assert self.results is not None
        return {
            name: value if result is None else result(value)
            for name, value, result in zip(self.names, returned, self.results, strict=True)
        }


async def insert_returning(
    connection: AsyncConnection, table: Table, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Insert one row of `values` (column name to Python value) in `connection`'s transaction; the stored
    row, every column. A duplicate key raises SQLAlchemy's `IntegrityError`."""
    statement = InsertStatement.of(table, connection.dialect, tuple(values))
    driver = await driver_of(connection)
    await driver.begin()
    parameters = statement.parameters(values)
    with translated(driver, statement.sql, parameters):
        if statement.results is None:
            statement.set_result_types(await driver.result_types(statement.sql, len(statement.names)))
        rows = await driver.fetch(statement.sql, *parameters)
    return statement.row(rows[0])
