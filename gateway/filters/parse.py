"""Parse and validate a LoopBack filter once, against a model, into the `ast` form.

Everything a client can get wrong is found here and reported as a `FilterError` (a 400), so the SQL and
Python back ends only ever see well-typed trees. LoopBack's own messages are kept where it has one (the
juggler's `_normalize`/`_coerce`); values are coerced by property type because the bracket form turns
every value into a string. Deliberately stricter than LoopBack: unknown properties, hidden properties,
JSON-typed properties and unknown operators are errors instead of being ignored or compared as text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

from gateway.filters.ast import And, Condition, Filter, FilterError, Op, Or, OrderBy, Regexp, Where
from gateway.filters.querystring import NOT_AN_OBJECT
from gateway.jsonshape import FILTER_MAX_DEPTH, FILTER_MAX_NODES, ShapeError, check_shape
from gateway.models.definition import ModelDef, PropertyDef, PropertyType
from gateway.models.rows import MAX_SAFE_INTEGER, NUMBER_TEXT, js_number_text, parse_date
from gateway.regex import RegexpError, compile_search

INTEGER_ID_RANGE: Final = (-(2**63), 2**63 - 1)
"""The values a numeric id can hold (a 64-bit integer column)."""
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})
_ORDER_SEPARATOR = re.compile(r"\s*,\s*")
_LIKE_OPS: Final = frozenset({Op.LIKE, Op.NLIKE, Op.ILIKE, Op.NILIKE})
_REGEXP_FLAGS: Final = frozenset("igm")
MAX_CONDITIONS: Final = 256
"""Property conditions in one `where` (SQLite refuses an expression tree 1,000 terms deep)."""
MAX_ORDER_TERMS: Final = 64
"""Terms of one `order` (SQLite refuses an ORDER BY of more than 999)."""

_Invalid: TypeAlias = Callable[[str], FilterError]
"""Builds the error for the clause being parsed, given the reason."""


def parse_filter(model: ModelDef, raw: Any) -> Filter:
    """A whole filter (`where`, `order`, `limit`, `skip`/`offset`, `fields`); None gives the empty filter."""
    if raw is None:
        return Filter()
    if not isinstance(raw, Mapping):
        raise FilterError(NOT_AN_OBJECT)
    _check_shape(raw, "filter")
    _check_include(model, raw.get("include"))
    limit = _count("limit", raw.get("limit"))
    skip = _count("skip", raw.get("skip")) or _count("offset", raw.get("offset")) or 0
    return Filter(
        where=parse_where(model, raw.get("where")),
        order=parse_order(model, raw.get("order")),
        limit=limit or None,  # LoopBack treats a falsy limit as no limit
        skip=skip,
        fields=parse_fields(model, raw.get("fields")),
    )


def parse_where(model: ModelDef, raw: Any) -> Where | None:
    """A where clause; None (and `{}`) mean "everything"."""
    if raw is None:
        return None
    _check_shape(raw, "where clause")
    where = _where(model, raw)
    if _conditions(where) > MAX_CONDITIONS:
        raise FilterError(f"The where clause has more than {MAX_CONDITIONS} conditions")
    return None if where == And(()) else where


def _check_shape(raw: Any, what: str) -> None:
    try:
        check_shape(raw, what=what, max_depth=FILTER_MAX_DEPTH, max_nodes=FILTER_MAX_NODES)
    except ShapeError as exc:
        raise FilterError(str(exc)) from None


def _conditions(where: Where) -> int:
    if isinstance(where, (And, Or)):
        return sum(_conditions(item) for item in where.items)
    return 1


def parse_order(model: ModelDef, raw: Any) -> tuple[OrderBy, ...]:
    """`"a"`, `"a DESC"`, `"a ASC, b DESC"` or a list of those; directions are case-insensitive."""
    if raw is None or raw == "":
        return ()
    try:
        items = [raw] if isinstance(raw, str) else _sequence(raw)
    except FilterError:
        raise FilterError(f"The order {_json(raw)} is not valid") from None
    order: list[OrderBy] = []
    for item in items:
        if not isinstance(item, str):
            raise FilterError(f"The order {_json(item)} is not valid")
        for token in _ORDER_SEPARATOR.split(item.strip()):
            if not token:
                continue
            name, *direction = token.split()
            descending = False
            if direction:
                word = direction[0].upper()
                if len(direction) > 1 or word not in ("ASC", "DESC"):
                    raise FilterError(f"The order {_json(token)} has invalid direction")
                descending = word == "DESC"
            _filterable(model, name)
            order.append(OrderBy(name, descending))
            if len(order) > MAX_ORDER_TERMS:
                raise FilterError(f"The order has more than {MAX_ORDER_TERMS} terms")
    return tuple(order)


def parse_fields(model: ModelDef, raw: Any) -> tuple[str, ...] | None:
    """The visible properties to return, in model order; None means all of them.

    List form includes the names given; object form includes the true ones, or, when every value is
    false, excludes them. Unknown names are ignored, as LoopBack does.
    """
    if raw is None or raw == "" or raw == [] or raw == {}:
        return None
    if isinstance(raw, str):
        wanted = {raw}
    elif isinstance(raw, list):
        wanted = {name for name in raw if isinstance(name, str)}
    elif isinstance(raw, Mapping):
        included = {name for name, flag in raw.items() if _truthy(flag)}
        wanted = included or {p.name for p in model.properties} - set(raw)
    else:
        raise FilterError(f"The fields parameter {_json(raw)} is not valid")
    return tuple(p.name for p in model.properties if p.name in wanted and not p.hidden)


def _truthy(flag: Any) -> bool:
    """JavaScript truthiness, except that the bracket form's "false" and "0" are false."""
    return flag not in (False, None, 0, "", "false", "0")


def _check_include(model: ModelDef, raw: Any) -> None:
    name = _relation_name(raw)
    if name is not None:
        raise FilterError(f'Relation "{name}" is not defined for {model.name} model')


def _relation_name(raw: Any) -> str | None:
    if raw is None or raw == "" or raw == [] or raw == {}:
        return None
    if isinstance(raw, list):
        return next((n for n in map(_relation_name, raw) if n is not None), None)
    if isinstance(raw, Mapping):
        return str(raw["relation"]) if "relation" in raw else str(next(iter(raw)))
    return str(raw)


def _count(key: str, raw: Any) -> int | None:
    """A non-negative integer parameter (`limit`, `skip`, `offset`); digit strings come from brackets."""
    if raw is None or raw == "":
        return None
    value: Any = raw
    if (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 20) or (
        isinstance(raw, float) and raw.is_integer()
    ):
        value = int(raw)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise FilterError(f"The {key} parameter {_json(raw)} is not valid")
    return value


def _where(model: ModelDef, raw: Any) -> Where:
    if not isinstance(raw, Mapping):
        raise FilterError(f"The where clause {_json(raw)} is not an object")
    items: list[Where] = []
    for key, value in raw.items():
        if key in ("and", "or"):
            try:
                clauses = _sequence(value)
            except FilterError as exc:
                raise FilterError(f"The {key} operator has invalid clauses {_json(value)}: {exc}") from None
            parts = [_where(model, clause) for clause in clauses]
            items.append(_all_of(parts) if key == "and" else _any_of(parts))
        else:
            items.extend(_property_conditions(model, key, value))
    return _all_of(items)


def _all_of(items: list[Where]) -> Where:
    """AND of the items, nested ANDs flattened; one item stands alone."""
    flat: list[Where] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _any_of(items: list[Where]) -> Where:
    """OR of the items, nested ORs flattened; one item stands alone."""
    flat: list[Where] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _property_conditions(model: ModelDef, name: str, raw: Any) -> list[Condition]:
    prop = _filterable(model, name)
    if not isinstance(raw, Mapping):
        return [_condition(prop, Op.EQ, raw, raw)]
    if not raw:
        raise FilterError(f"The {name} property has invalid clause {_json(raw)}: no operator given")
    conditions = []
    for op_name, value in raw.items():
        try:
            op = Op(op_name)
        except ValueError:
            raise FilterError(
                f'The {name} property has invalid clause {_json(raw)}: unknown operator "{op_name}"'
            ) from None
        conditions.append(_condition(prop, op, value, raw))
    return conditions


def _filterable(model: ModelDef, name: str) -> PropertyDef:
    """The declared property `name`, if a filter may use it (in `where` or `order`)."""
    prop = model.by_name.get(name)
    if prop is None:
        raise FilterError(f'Property "{name}" is not defined for {model.name} model')
    if prop.hidden:
        raise FilterError(f'Properties "{name}" are not allowed in query')
    if prop.type.is_json:
        raise FilterError(f'Property "{name}" of type {prop.type.value} cannot be used in a filter')
    return prop


def _condition(prop: PropertyDef, op: Op, raw: Any, clause: Any) -> Condition:
    def invalid(reason: str) -> FilterError:
        return FilterError(f"The {prop.name} property has invalid clause {_json(clause)}: {reason}")

    if raw is None:
        if op in (Op.EQ, Op.NEQ):
            return Condition(prop.name, op, None)
        raise invalid("Expected a value, received null")
    if op in (Op.INQ, Op.NIN, Op.BETWEEN):
        try:
            items = _sequence(raw) if isinstance(raw, (list, Mapping)) else [raw]
        except FilterError as exc:
            raise invalid(str(exc)) from None
        if op is Op.BETWEEN and len(items) != 2:
            raise invalid(f"Expected precisely 2 values, received {len(items)}")
        if any(item is None for item in items):
            raise invalid("Expected a value, received null")
        return Condition(prop.name, op, tuple(_coerce(prop, item, invalid) for item in items))
    if op in _LIKE_OPS or op is Op.REGEXP:
        if prop.type is not PropertyType.STRING:
            raise invalid(f"{op.value} applies only to string properties")
        if not isinstance(raw, str):
            raise invalid("Expected a string")
        _check_text(raw, invalid)
        if op is Op.REGEXP:
            return Condition(prop.name, op, regexp_operand(raw, invalid))
        if _ends_with_escape(raw):
            raise invalid("LIKE pattern must not end with the escape character \\")
        return Condition(prop.name, op, raw)
    return Condition(prop.name, op, _coerce(prop, raw, invalid))


def _sequence(raw: Any) -> list[Any]:
    """A list, or what qs makes of a long one: an object with the sequential keys "0".."n-1"."""
    if isinstance(raw, list):
        return raw
    if isinstance(raw, Mapping) and raw and set(raw) == {str(i) for i in range(len(raw))}:
        return [raw[str(i)] for i in range(len(raw))]
    raise FilterError("Value is not an array or object with sequential numeric indices")


def _coerce(prop: PropertyDef, raw: Any, invalid: _Invalid) -> Any:
    """`raw` as a value of the property's type, or `invalid(reason)` raised."""
    kind = prop.type
    if kind is PropertyType.STRING:
        if isinstance(raw, str):
            return _check_text(raw, invalid)
        if _finite_number(raw):
            return js_number_text(raw)
        raise invalid("Expected a string")
    if kind is PropertyType.NUMBER and prop.is_id:
        value = raw
        if (isinstance(raw, str) and _INTEGER_TEXT.fullmatch(raw)) or (
            isinstance(raw, float) and raw.is_integer()
        ):
            value = int(raw)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not INTEGER_ID_RANGE[0] <= value <= INTEGER_ID_RANGE[1]
        ):
            raise invalid("Expected an integer id")
        return value
    if kind is PropertyType.NUMBER:
        if isinstance(raw, str) and NUMBER_TEXT.fullmatch(raw):
            raw = float(raw)
        if _finite_number(raw):
            return float(raw)
        raise invalid("Expected a number")
    if kind is PropertyType.BOOLEAN:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and (raw in _TRUE or raw in _FALSE):
            return raw in _TRUE
        if isinstance(raw, int) and raw in (0, 1):
            return raw == 1
        raise invalid("Expected a boolean")
    try:
        return parse_date(raw)
    except (ValueError, OverflowError, OSError):
        raise invalid("Expected a date") from None


def _finite_number(raw: Any) -> bool:
    """A JSON number a double can hold: the query's JSON decoder gives integers of any size (10**400)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return False
    try:
        return math.isfinite(raw)
    except OverflowError:
        return False


def _check_text(text: str, invalid: _Invalid) -> str:
    if "\x00" in text:  # PostgreSQL text cannot hold NUL; refuse it on every database alike
        raise invalid("Strings cannot contain the NUL character")
    return text


def _ends_with_escape(pattern: str) -> bool:
    index = 0
    while index < len(pattern):
        index += 2 if pattern[index] == "\\" else 1
    return index > len(pattern)


def regexp_operand(raw: str, invalid: _Invalid = FilterError) -> Regexp:
    """A JS regex literal `/pattern/flags` (flags from "igm"; only `i` matters) or a plain pattern; one RE2
    cannot compile is `invalid(reason)` raised (no JSON Schema can say which, see tests/fuzzing_hooks.py)."""
    pattern, flags = raw, ""
    if raw.startswith("/") and raw.rfind("/") > 0:
        end = raw.rfind("/")
        pattern, flags = raw[1:end], raw[end + 1 :]
        wrong = sorted(set(flags) - _REGEXP_FLAGS)
        if wrong:
            raise invalid(f"Invalid regex flags: {','.join(wrong)}")
    ignore_case = "i" in flags
    try:
        compile_search(pattern, ignore_case=ignore_case)
    except RegexpError as exc:
        raise invalid(f"Invalid regular expression: {exc}") from None
    return Regexp(pattern, ignore_case)


def _json(value: Any) -> str:
    """`%j` in LoopBack's messages: compact JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
