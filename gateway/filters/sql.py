"""Execute a parsed filter in SQL, with the same meaning on SQLite and PostgreSQL as `predicate.py` in Python.

What it takes to make the three agree:
- NULLs: SQL's three-valued logic is spelled out, so `neq`/`nin`/`nlike`/`nilike` match NULL and nothing
  else does, and empty `inq`/`nin` lists become constants.
- Strings order by code point: PostgreSQL compares and sorts string columns under `COLLATE "C"`; SQLite's
  default BINARY collation already compares UTF-8 bytes, which is code point order.
- LIKE escapes with `\\` everywhere and is case-sensitive (`PRAGMA case_sensitive_like=ON` on SQLite).
- ILIKE lowercases like Python's `str.lower`: PostgreSQL's native ILIKE, and on SQLite (whose `lower()` only
  knows ASCII) the `gateway_lower` function that `gateway.database` registers.
  Limitation: PostgreSQL lowercases `İ` and a word-final `Σ` unlike Python, so `ilike` on them may disagree.
- REGEXP: PostgreSQL `~`/`~*` (its ARE dialect), SQLite RE2 (the `regexp` function `gateway.database`
  registers, as the stream predicate uses). Limitation: patterns beyond the syntax both share (literals, `.`,
  classes, `^ $ * + ? | ()`, `{m,n}`) may match differently on PostgreSQL (`\\b` is a backspace there).
- ORDER BY puts NULLs first ascending and last descending, like LoopBack's memory connector, and always
  ends with the primary key so that pages are deterministic.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table, and_, false, func, literal, not_, or_, true
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.types import String, TypeEngine

from gateway.database import SQLITE_LOWER
from gateway.filters.ast import And, Condition, Filter, Op, OrderBy, Regexp, Where

SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")
_ESCAPE = "\\"


def apply_filter(statement: SelectT, flt: Filter, table: Table, dialect_name: str) -> SelectT:
    """`statement` with the filter's where, order (then the primary key), limit and offset applied."""
    if flt.where is not None:
        statement = statement.where(where_clause(flt.where, table, dialect_name))
    statement = statement.order_by(*order_by(flt.order, table, dialect_name))
    if flt.limit is not None:
        statement = statement.limit(flt.limit)
    if flt.skip:
        statement = statement.offset(flt.skip)
    return statement


def where_clause(where: Where, table: Table, dialect_name: str) -> ColumnElement[bool]:
    """The SQL condition for a parsed where clause over `table`'s columns."""
    if isinstance(where, Condition):
        return _condition(where, table, dialect_name)
    parts = [where_clause(item, table, dialect_name) for item in where.items]
    if isinstance(where, And):
        return and_(true(), *parts) if parts else true()
    return or_(false(), *parts) if parts else false()


def order_by(order: tuple[OrderBy, ...], table: Table, dialect_name: str) -> list[UnaryExpression[Any]]:
    """ORDER BY terms: the requested ones, then the primary key ascending unless already named."""
    terms = []
    for item in order:
        column = _ordered(table.c[item.prop], dialect_name)
        terms.append(column.desc().nulls_last() if item.descending else column.asc().nulls_first())
    primary_key = next(iter(table.primary_key.columns))
    if primary_key.name not in {item.prop for item in order}:
        terms.append(_ordered(primary_key, dialect_name).asc())
    return terms


def _ordered(column: ColumnElement[Any], dialect_name: str) -> ColumnElement[Any]:
    """The column as compared by `gt`..`lte`, `between` and ORDER BY: code point order for strings."""
    if dialect_name == "postgresql" and isinstance(column.type, String):
        return column.collate("C")
    return column


def _condition(condition: Condition, table: Table, dialect_name: str) -> ColumnElement[bool]:
    column: ColumnElement[Any] = table.c[condition.prop]
    op, value = condition.op, condition.value
    if op is Op.EQ:
        return column.is_(None) if value is None else column == value
    if op is Op.NEQ:
        return column.is_not(None) if value is None else or_(column.is_(None), column != value)
    if op in (Op.GT, Op.GTE, Op.LT, Op.LTE, Op.BETWEEN):
        return _compare(_ordered(column, dialect_name), op, value, column.type)
    if op is Op.INQ:
        return column.in_(value) if value else false()
    if op is Op.NIN:
        return or_(column.is_(None), column.not_in(value)) if value else true()
    if op is Op.LIKE:
        return column.like(value, escape=_ESCAPE)
    if op is Op.NLIKE:
        return or_(column.is_(None), column.not_like(value, escape=_ESCAPE))
    if op is Op.ILIKE:
        return _ilike(column, value, dialect_name)
    if op is Op.NILIKE:
        return or_(column.is_(None), not_(_ilike(column, value, dialect_name)))
    assert isinstance(value, Regexp)
    if dialect_name == "postgresql":
        return column.regexp_match(value.pattern, flags="i" if value.ignore_case else None)
    # The SQLite REGEXP function takes no flags; the inline flag does the same job.
    return column.regexp_match(("(?i)" if value.ignore_case else "") + value.pattern)


def _compare(column: ColumnElement[Any], op: Op, value: Any, type_: TypeEngine[Any]) -> ColumnElement[bool]:
    """An ordering comparison. Values are bound explicitly (SQLAlchemy refuses `col > False`), with the
    column's own type: the collated type would cast the parameter with a COLLATE PostgreSQL rejects."""
    if op is Op.BETWEEN:
        return column.between(literal(value[0], type_), literal(value[1], type_))
    bound = literal(value, type_)
    comparison: ColumnElement[bool]
    if op is Op.GT:
        comparison = column > bound
    elif op is Op.GTE:
        comparison = column >= bound
    elif op is Op.LT:
        comparison = column < bound
    else:
        comparison = column <= bound
    return comparison


def _ilike(column: ColumnElement[Any], pattern: str, dialect_name: str) -> ColumnElement[bool]:
    if dialect_name == "sqlite":
        lowered: ColumnElement[str] = getattr(func, SQLITE_LOWER)(column)
        return lowered.like(pattern.lower(), escape=_ESCAPE)
    return column.ilike(pattern, escape=_ESCAPE)
