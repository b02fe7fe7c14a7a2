"""LoopBack's filter language: parsed and validated once, then run in SQL or against a row in Python.

`querystring.argument` reads `filter`/`where`/`options` from a request (JSON or bracket form);
`parse.parse_filter` turns it into the `ast.Filter` of one model, or raises `FilterError` (a 400);
`sql.apply_filter` / `sql.where_clause` run it in the database; `predicate.compile_predicate` runs its where
clause against a JSON-form row (change streams), with the same results; `fields.project` shapes the rows.
"""

from __future__ import annotations

from gateway.filters.ast import And, Condition, Filter, FilterError, Op, Or, OrderBy, Regexp, Where
from gateway.filters.fields import project
from gateway.filters.parse import parse_fields, parse_filter, parse_order, parse_where
from gateway.filters.predicate import Predicate, compile_predicate
from gateway.filters.querystring import argument, object_argument, parse_query
from gateway.filters.sql import apply_filter, order_by, where_clause

__all__ = [
    "And",
    "Condition",
    "Filter",
    "FilterError",
    "Op",
    "Or",
    "OrderBy",
    "Predicate",
    "Regexp",
    "Where",
    "apply_filter",
    "argument",
    "compile_predicate",
    "object_argument",
    "order_by",
    "parse_fields",
    "parse_filter",
    "parse_order",
    "parse_query",
    "parse_where",
    "project",
    "where_clause",
]
