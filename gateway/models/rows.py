"""Rows between the database and JSON: the one place that decides how a stored value looks on the wire.

REST replies and change objects both use `to_json_row`, so a row streamed as a change is byte-for-byte the
row a `GET` returns. The JSON form follows LoopBack: properties in model order, unset (NULL) properties
omitted, numbers without a fraction printed as integers (JavaScript has one number type), dates as
`toJSON()` prints them (`2026-11-28T00:01:01.000Z`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.models.definition import ModelDef, PropertyType
from gateway.models.tables import EXTRA_COLUMN

MAX_SAFE_INTEGER = 2**53 - 1
NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A decimal number as text (what a form or a URL sends), without JavaScript's hex, Infinity or blanks."""


def to_json_row(model: ModelDef, stored: Mapping[Any, Any]) -> dict[str, Any]:
    """The JSON object for a stored row (a mapping of column name to value)."""
    row: dict[str, Any] = {}
    for prop in model.properties:
        value = stored.get(prop.name)
        if value is None or prop.hidden:
            continue
        row[prop.name] = to_json_value(prop.type, value)
    extra = stored.get(EXTRA_COLUMN)
    if extra:
        for name, value in extra.items():
            row.setdefault(name, value)
    return row


def to_json_value(prop_type: PropertyType, value: Any) -> Any:
    if prop_type is PropertyType.NUMBER:
        return json_number(value)
    if prop_type is PropertyType.DATE:
        return format_date(value)
    return value


def json_number(value: int | float) -> int | float:
    """Print integral numbers as integers, as JavaScript does."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    return value


def js_number_text(value: float) -> str:
    """`String(n)` in JavaScript for the common cases: integral numbers print without a fraction."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def format_date(value: datetime) -> str:
    """`Date.prototype.toJSON()`: UTC, milliseconds, a `Z`."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def parse_date(value: Any) -> datetime:
    """A date from JSON input: an ISO 8601 string or milliseconds since the epoch.

    Returned naive, in UTC, truncated to milliseconds (what the JSON form can carry), so that what is stored
    equals what is read back and what filters compare. Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError("not a date")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("not a date")
        parsed = datetime.fromtimestamp(value / 1000, tz=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    else:
        raise ValueError("not a date")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
