"""Per-model JSON Schemas of the filter language, exact enough that schema-valid means accepted.

`gateway.filters.parse` is the authority; these schemas say the same thing in JSON Schema, so that a
generated client (or schemathesis' positive/negative data checks) can rely on the document: the model's
filterable property names and no others, the operators each takes, the value types each coerces (the
bracket form's strings included: `"true"`, `"12"`), `order` tokens, `limit`/`skip` ranges (the page size
for `find`), `fields`, and `include` with the model's relations and their scopes. What JSON Schema cannot
say (whether a `regexp` pattern compiles under RE2, the condition, `order` term and nesting limits of
README's Limits) stays a 400, written down where the fuzzing narrows its checks (tests/fuzzing_hooks.py).
"""

from __future__ import annotations

import re
from typing import Any

from gateway.filters.parse import INTEGER_ID_RANGE
from gateway.models.definition import ModelDef, PropertyDef, PropertyType
from gateway.models.rows import MAX_SAFE_INTEGER

_FLOAT_MAX = 1.7976931348623157e308
_LIKE_OPERATORS = ("like", "nlike", "ilike", "nilike")
_ORDERED_OPERATORS = ("gt", "gte", "lt", "lte")
_DATE_MS_RANGE = (-62_135_596_800_000, 253_402_300_799_000)
"""Milliseconds since the epoch that a date can hold (years 1 to 9999)."""
NO_NUL = "^[^\u0000]*$"
_LIKE_PATTERN = r"^(?:[^\\\u0000]|\\[^\u0000])*$"
"""A LIKE pattern: no NUL, and no dangling escape character at its end."""
_NUMBER_TEXT = r"^[+-]?(?:[0-9]{1,200}(?:\.[0-9]{0,200})?|\.[0-9]{1,200})(?:[eE][+-]?[0-9]{1,2})?$"
"""A finite decimal as text (the bracket form), kept short enough that it cannot overflow a double."""


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def digits_at_most(limit: int, max_length: int) -> str:
    """A regex (unanchored) for runs of 1..`max_length` decimal digits, leading zeros allowed, whose value
    is at most `limit`."""
    text = str(limit)
    width = len(text)
    alternatives = [f"[0-9]{{1,{width - 1}}}"] if width > 1 else []
    for index, digit in enumerate(text):
        if digit != "0":
            below = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            rest = width - index - 1
            alternatives.append(re.escape(text[:index]) + below + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(text)
    padding = max_length - width
    zeros = f"0{{0,{padding}}}" if padding > 0 else ""
    return f"{zeros}(?:{'|'.join(alternatives)})"


def _integer_text(low: int, high: int, max_length: int) -> str:
    """Integer text in [low, high] with an optional sign, at most `max_length` digits."""
    negative = digits_at_most(-low, max_length)
    return f"^(?:[+]?{digits_at_most(high, max_length)}|-{negative})$"


def count_schema(maximum: int) -> dict[str, Any]:
    """`limit`/`skip`/`offset`: an integer in 0..maximum, its digits as text, or null/"" for none."""
    return {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": maximum},
            {"type": "string", "pattern": f"^(?:{digits_at_most(maximum, 20)})?$"},
            {"type": "null"},
        ]
    }


def value_schema(prop: PropertyDef) -> dict[str, Any]:
    """A value a property's condition accepts (parse.`_coerce`): its type, or the text the bracket form
    sends for it."""
    finite = {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX}
    if prop.type is PropertyType.STRING:
        return {"anyOf": [{"type": "string", "pattern": NO_NUL}, finite]}
    if prop.type is PropertyType.NUMBER and prop.is_id:
        low, high = INTEGER_ID_RANGE
        return {
            "anyOf": [
                {"type": "integer", "minimum": low, "maximum": high},
                {"type": "string", "pattern": _integer_text(low, high, 20)},
            ]
        }
    if prop.type is PropertyType.NUMBER:
        return {"anyOf": [finite, {"type": "string", "pattern": _NUMBER_TEXT}]}
    if prop.type is PropertyType.BOOLEAN:
        return {"anyOf": [{"type": "boolean"}, {"enum": ["true", "1", "false", "0", 0, 1]}]}
    low, high = _DATE_MS_RANGE
    return {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "number", "minimum": low, "maximum": high},
        ]
    }


def _alternatives(*schemas: dict[str, Any]) -> dict[str, Any]:
    """`anyOf` the schemas, nested `anyOf`s flattened (fewer branches for a generator to walk)."""
    flat = [branch for schema in schemas for branch in schema.get("anyOf", [schema])]
    return {"anyOf": flat}


def _operators(prop: PropertyDef, value: dict[str, Any]) -> dict[str, Any]:
    """The operator object of one property: `{"gt": 3, "lt": 9}`, at least one operator."""
    nullable = _alternatives(value, {"type": "null"})
    listed = _alternatives({"type": "array", "items": value}, value)
    operators: dict[str, Any] = {"eq": nullable, "neq": nullable, "inq": listed, "nin": listed}
    operators |= dict.fromkeys(_ORDERED_OPERATORS, value)
    operators["between"] = {"type": "array", "items": value, "minItems": 2, "maxItems": 2}
    if prop.type is PropertyType.STRING:
        operators |= {name: {"type": "string", "pattern": _LIKE_PATTERN} for name in _LIKE_OPERATORS}
        operators["regexp"] = {"type": "string", "pattern": NO_NUL}  # and RE2 must compile it
    return {"type": "object", "properties": operators, "additionalProperties": False, "minProperties": 1}


def filterable(model: ModelDef) -> list[PropertyDef]:
    """The properties a `where` or `order` may name (parse.`_filterable`)."""
    return [p for p in model.properties if not p.hidden and not p.type.is_json]


def where_schema(model: ModelDef) -> dict[str, Any]:
    """`<Model>Where`: property conditions (a value, null, or an operator object) and `and`/`or` lists."""
    conditions: dict[str, Any] = {}
    for prop in filterable(model):
        value = value_schema(prop)
        conditions[prop.name] = _alternatives(value, {"type": "null"}, _operators(prop, value))
    clauses = {"type": "array", "items": ref(f"{model.name}Where")}
    return {
        "type": "object",
        "title": f"{model.name} where",
        "properties": {**conditions, "and": clauses, "or": clauses},
        "additionalProperties": False,
    }


def order_schema(model: ModelDef) -> dict[str, Any]:
    """`"a"`, `"a DESC, b"` or a list of them, naming filterable properties; empty tokens are skipped."""
    names = "|".join(re.escape(p.name) for p in filterable(model))
    token = rf"(?:{names})(?:\s+(?:[Aa][Ss][Cc]|[Dd][Ee][Ss][Cc]))?"
    text = {"type": "string", "pattern": rf"^\s*(?:{token})?(?:\s*,\s*(?:{token})?)*\s*$"}
    return {"anyOf": [text, {"type": "array", "items": text}, {"type": "null"}]}


FIELDS_SCHEMA: dict[str, Any] = {
    "description": "Names to include (a name, a list, or {name: true}); {name: false} excludes; "
    "unknown names are ignored, as LoopBack does",
    "type": ["string", "array", "object", "null"],
}


def include_schema(model: ModelDef, models: dict[str, ModelDef]) -> dict[str, Any]:
    """`<Model>Include`: the model's relation names, lists of them, `{relation: nested}` and
    `{"relation": name, "scope": <Target>Filter}`; nothing else (an unknown relation is a 400)."""
    relations = [r for r in model.relations if r.kind.embeds or r.target in models]
    empty: list[dict[str, Any]] = [{"type": "null"}, {"const": ""}, {"const": {}}]
    if not relations:
        return {"anyOf": [*empty, {"type": "array", "items": ref(f"{model.name}Include")}]}

    def nested(relation: Any) -> dict[str, Any]:
        return {} if relation.kind.embeds else ref(f"{relation.target}Include")

    def scoped(relation: Any) -> dict[str, Any]:
        scope = {} if relation.kind.embeds else {"anyOf": [{"type": "null"}, ref(f"{relation.target}Filter")]}
        return {
            "type": "object",
            "properties": {"relation": {"const": relation.name}, "scope": scope},
            "required": ["relation"],
        }

    return {
        "anyOf": [
            *empty,
            {"enum": [r.name for r in relations]},
            {"type": "array", "items": ref(f"{model.name}Include")},
            {
                "type": "object",
                "properties": {r.name: nested(r) for r in relations},
                "additionalProperties": False,
                "not": {"required": ["relation"]},
            },
            *(scoped(r) for r in relations),
        ]
    }


def filter_schema(model: ModelDef, *, max_limit: int, by_id: bool = False) -> dict[str, Any]:
    """A filter: `where`, `order`, `limit`, `skip`/`offset`, `fields`, `include`; other keys are ignored,
    as LoopBack does. By id only `fields` and `include` are read (the rest is ignored)."""
    properties: dict[str, Any] = {"fields": FIELDS_SCHEMA, "include": ref(f"{model.name}Include")}
    if not by_id:
        count = count_schema(MAX_SAFE_INTEGER)
        properties |= {
            "where": {"anyOf": [{"type": "null"}, ref(f"{model.name}Where")]},
            "order": order_schema(model),
            "limit": count_schema(max_limit),
            "skip": count,
            "offset": count,
        }
    return {"type": "object", "title": f"{model.name} filter", "properties": properties}


def options_schema(model: ModelDef) -> dict[str, Any]:
    """A change stream's `options`: `where` and `fields` as in a filter (other keys are ignored)."""
    where = {"anyOf": [{"type": "null"}, ref(f"{model.name}Where")]}
    return {"type": "object", "properties": {"where": where, "fields": FIELDS_SCHEMA}}


def filter_schemas(models: tuple[ModelDef, ...], max_page_size: int) -> dict[str, Any]:
    """`components/schemas` entries per model: `<M>Where`, `<M>Include`, `<M>Filter` (findOne, include
    scopes), `<M>PageFilter` (find: `limit` up to the page size) and `<M>IdFilter` (findById)."""
    by_name = {model.name: model for model in models}
    schemas: dict[str, Any] = {}
    for model in models:
        schemas[f"{model.name}Where"] = where_schema(model)
        schemas[f"{model.name}Include"] = include_schema(model, by_name)
        schemas[f"{model.name}Filter"] = filter_schema(model, max_limit=MAX_SAFE_INTEGER)
        schemas[f"{model.name}PageFilter"] = filter_schema(model, max_limit=max_page_size or MAX_SAFE_INTEGER)
        schemas[f"{model.name}IdFilter"] = filter_schema(model, max_limit=MAX_SAFE_INTEGER, by_id=True)
    return schemas
