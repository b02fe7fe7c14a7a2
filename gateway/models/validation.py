"""Request bodies → column values, with LoopBack's validation errors.

LoopBack silently nulls a value of the wrong type (`"priority": "high"` is stored as null). The gateway does
not: a wrong type is a 422 like any other invalid property, with LoopBack's error shape, so clients learn of
the mistake instead of losing data.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.models.definition import (
    MISSING,
    EmbeddedType,
    ModelDef,
    PropertyDef,
    PropertyType,
    StrictMode,
)
from gateway.models.geopoint import GEO_POINT, geo_point
from gateway.models.rows import MAX_SAFE_INTEGER, NUMBER_TEXT, js_number_text, parse_date, to_json_value
from gateway.models.tables import EXTRA_COLUMN

_TYPE_NAMES = {
    PropertyType.STRING: "string",
    PropertyType.NUMBER: "number",
    PropertyType.BOOLEAN: "boolean",
    PropertyType.DATE: "date",
    PropertyType.OBJECT: "object",
    PropertyType.ARRAY: "array",
}


@dataclass
class InvalidInstance(Exception):
    """A body that does not make a valid instance; rendered as LoopBack's 422 `ValidationError`."""

    model: str
    problems: list[tuple[str, str, str, Any]] = field(
        default_factory=list
    )  # (property, code, message, value)

    def add(self, prop: str, code: str, message: str, value: Any) -> None:
        self.problems.append((prop, code, message, value))

    @property
    def properties(self) -> set[str]:
        return {prop for prop, _, _, _ in self.problems}

    @property
    def message(self) -> str:
        details = "; ".join(f"`{p}` {message} (value: {js_repr(v)})" for p, _, message, v in self.problems)
        return f"The `{self.model}` instance is not valid. Details: {details}."

    @property
    def details(self) -> dict[str, Any]:
        codes: dict[str, list[str]] = {}
        messages: dict[str, list[str]] = {}
        for prop, code, message, _ in self.problems:
            codes.setdefault(prop, []).append(code)
            messages.setdefault(prop, []).append(message)
        return {"context": self.model, "codes": codes, "messages": messages}


_UNDEFINED = object()
NOW = "$now"
"""LoopBack's `"default": "$now"` for a date: the time of the create."""


def js_repr(value: Any) -> str:
    """How LoopBack prints a value in a validation message."""
    if value is _UNDEFINED:
        return "undefined"
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return str(value)


def coerce(prop: PropertyDef, value: Any) -> Any:
    """The stored form of a JSON value for `prop`, coerced as juggler does; ValueError when the type is wrong.

    Forms and URL parameters send strings, so like juggler a numeric string becomes a number, a number
    becomes a string for a string property, `"true"`/`"false"` become booleans, and dates come from ISO
    strings or epoch milliseconds. What juggler would turn into `null` (`"high"` for a number) is refused.
    """
    kind = prop.type
    if kind is PropertyType.STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return js_number_text(value)
    elif kind is PropertyType.NUMBER:
        if isinstance(value, str) and NUMBER_TEXT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if prop.is_id:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                if abs(value) > MAX_SAFE_INTEGER:
                    raise ValueError
                return int(value)
            return float(value)
    elif kind is PropertyType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
    elif kind is PropertyType.DATE:
        return parse_date(value)
    elif kind is PropertyType.OBJECT:
        if prop.embedded is GEO_POINT:
            return geo_point(value)
        if isinstance(value, dict):
            return value if prop.embedded is None else _embedded(prop.embedded, value)
    elif kind is PropertyType.ARRAY:
        if isinstance(value, list):
            if prop.item_type is None or prop.item_type is PropertyType.ANY:
                return value
            item = PropertyDef(prop.name, prop.item_type, embedded=prop.embedded)
            return [None if v is None else to_json_value(item.type, coerce(item, v)) for v in value]
    else:
        return value
    raise ValueError


def _embedded(shape: EmbeddedType, value: dict[str, Any]) -> dict[str, Any]:
    """An embedded object checked against its model as juggler builds the nested instance: declared
    properties coerced (in their JSON form) and defaulted, undeclared ones kept, dropped or refused by the
    model's `strict`. `required` is not enforced inside it (LB3 3.28 stores `{"city": "Oslo"}` for an
    Address whose street is required)."""
    result: dict[str, Any] = {}
    declared = {p.name for p in shape.properties}
    for prop in shape.properties:
        raw = value.get(prop.name)
        if prop.name not in value and prop.has_default:
            result[prop.name] = to_json_value(prop.type, default_value(prop))
            continue
        if _is_blank(raw):
            if prop.name in value:
                result[prop.name] = raw
            continue
        result[prop.name] = to_json_value(prop.type, coerce(prop, raw))
    for name, raw in value.items():
        if name in declared:
            continue
        if shape.strict is StrictMode.REJECT:
            raise ValueError
        if shape.strict is StrictMode.KEEP:
            result[name] = raw
    return result


def _is_blank(value: Any) -> bool:
    return value is None or value is _UNDEFINED or value == ""


def default_value(prop: PropertyDef) -> Any:
    if prop.default_fn == "now" or (prop.type is PropertyType.DATE and prop.default == NOW):
        now = datetime.now(UTC).replace(tzinfo=None)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)
    if prop.default_fn == "uuidv4":
        return str(uuid.uuid4())
    if prop.default_fn in ("uuid", "guid"):
        # juggler's are version 1 (time-based), so rows sorted by such an id sort by creation; the node is
        # random (multicast bit set, RFC 4122 §4.5) rather than this host's MAC address
        return str(uuid.uuid1(node=secrets.randbits(48) | 1 << 40))
    if prop.default is MISSING or prop.default is None:  # `"default": null` is common in LB3 apps
        return None
    return coerce(prop, prop.default)


def build_values(
    model: ModelDef,
    body: Mapping[str, Any],
    *,
    base: Mapping[str, Any] | None = None,
    allow_id: bool,
) -> dict[str, Any]:
    """Column values for a row made from `body`.

    Without `base` this is a new instance (create, replace): missing properties take their defaults. With
    `base` (the stored row) it is a patch: missing properties keep their stored values. `allow_id` is False
    where LoopBack's forceId forbids a client-chosen id. Raises `InvalidInstance` listing every problem.
    """
    problems = InvalidInstance(model.name)
    values: dict[str, Any] = {}
    for prop in model.properties:
        if prop.name in body:
            raw = body[prop.name]
            if prop.is_id:
                if raw is not None and not allow_id:
                    problems.add(prop.name, "absence", "can't be set", raw)
                    continue
                if raw is None:
                    continue
            if raw is None:
                values[prop.name] = None
                continue
            if has_nul(raw):
                problems.add(prop.name, "format", NUL_MESSAGE, raw)
                continue
            try:
                values[prop.name] = coerce(prop, raw)
            except ValueError:
                name = _TYPE_NAMES.get(prop.type, prop.type.value)
                problems.add(prop.name, "type", f"is not a valid {name}", raw)
        elif base is not None:
            if prop.name in base:
                values[prop.name] = base[prop.name]
        elif not prop.is_id or not prop.generated or prop.default_fn:
            values[prop.name] = default_value(prop)
    id_missing = base is None and values.get(model.id_name) is None and not model.id_property.generated
    if id_missing and model.id_name not in problems.properties:
        problems.add(model.id_name, "presence", "can't be blank", body.get(model.id_name, _UNDEFINED))
    for prop in model.properties:
        if base is not None and prop.name not in values:
            continue  # a patch of a row that does not have this column: nothing to check
        if prop.name in problems.properties:
            continue  # already reported (a wrong type): one problem per property
        if prop.required and not prop.is_id and _is_blank(values.get(prop.name, _UNDEFINED)):
            problems.add(prop.name, "presence", "can't be blank", body.get(prop.name, _UNDEFINED))
    extra = _undeclared(model, body, problems)
    if model.strict is StrictMode.KEEP:
        merged = {**((base or {}).get(EXTRA_COLUMN) or {}), **extra}
        values[EXTRA_COLUMN] = merged or None
    if problems.problems:
        raise problems
    return values


def _undeclared(model: ModelDef, body: Mapping[str, Any], problems: InvalidInstance) -> dict[str, Any]:
    unknown = {name: value for name, value in body.items() if name not in model.by_name}
    if model.strict is StrictMode.REJECT:
        for name in unknown:  # LB3 prints the value of an undeclared property as undefined
            problems.add(name, "unknown-property", "is not defined in the model", _UNDEFINED)
        return {}
    if model.strict is StrictMode.DROP:
        return {}
    for name, value in unknown.items():
        if has_nul(name) or has_nul(value):
            problems.add(name, "format", NUL_MESSAGE, value)
    return unknown


NUL_MESSAGE = "cannot contain the NUL character"
"""PostgreSQL's text and JSON cannot hold U+0000; refused on every database alike."""


def has_nul(value: Any) -> bool:
    """Whether a NUL character is in `value` or any string (key or value) nested in it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_id(model: ModelDef, raw: Any) -> Any | None:
    """The stored id for an id that came in a URL path or a body; None if it cannot be one."""
    prop = model.id_property
    if prop.type is PropertyType.NUMBER:
        if isinstance(raw, str):
            text = raw.strip()
            if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
                return None  # "²" is isdigit() but not int(); int() refuses 4,300 digits
            raw = int(text)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return None
        if isinstance(raw, float) and not raw.is_integer():
            return None
        return int(raw) if abs(raw) <= MAX_SAFE_INTEGER else None
    return raw if isinstance(raw, str) and raw else (str(raw) if isinstance(raw, int) else None)
