"""LoopBack's object arguments (`filter`, `where`, `options`) from a query string, JSON or bracket form.

LoopBack 3 reads `req.query` as Express builds it with npm `qs` (`allowPrototypes: true`), so
`filter[where][id][inq][0]=1` arrives as nested objects. `parse_query` reproduces qs's rules, including its
odd corners, so that a client that works against LoopBack sends us the same object:
- `a[]=x` appends, `a[0]=x` is an index; indices above 20 (`arrayLimit`) become object keys, and an array
  merged with an object turns into an object; arrays with holes are compacted.
- Repeated keys combine into a list; a plain value merged into an object becomes a key with value `true`.
- Brackets nest 5 deep (`depth`); whatever follows is kept as one literal key (`[f][g]`).
- Only the first 1000 parameters count (`parameterLimit`).
Values stay strings; `parse` coerces them by property type, as LoopBack does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.filters.ast import FilterError
from gateway.jsonshape import FILTER_MAX_DEPTH, ShapeError, check_text

DEPTH: Final = 5
ARRAY_LIMIT: Final = 20
PARAMETER_LIMIT: Final = 1000
NOT_AN_OBJECT: Final = "Value is not an object."

_SEGMENT = re.compile(r"\[[^\[\]]*\]")
_INDEX = re.compile(r"0|[1-9][0-9]*")


class _Hole:
    """A missing element of a JavaScript array (`a[3]=x` leaves 0..2 empty until qs compacts)."""

    __slots__ = ()


_HOLE: Final = _Hole()


def argument(multi_items: Sequence[tuple[str, str]], name: str) -> dict[str, Any] | None:
    """The object argument `name` of a request, or None when it is absent or empty.

    Accepts `name=<JSON object>` and the bracket form `name[key]=...`. Anything else, such as `name=notjson`,
    `name=[1]` or the parameter given twice, is LoopBack's 400 "Value is not an object.".
    """
    prefix = name + "["
    if not any(key == name or key.startswith(prefix) for key, _ in multi_items):
        return None
    return object_argument(parse_query(multi_items).get(name))


def object_argument(value: Any) -> dict[str, Any] | None:
    """Normalise an object argument from any source (query, JSON body, header): JSON text is decoded."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_reject_constant)
        except ValueError:
            raise FilterError(NOT_AN_OBJECT) from None
        except RecursionError:  # the shape limits (gateway.jsonshape) are far below this depth
            raise FilterError(f"The argument is nested deeper than {FILTER_MAX_DEPTH} levels") from None
        if value is None:
            return None
        try:
            check_text(value, what="argument")
        except ShapeError as exc:
            raise FilterError(str(exc)) from None
    if not isinstance(value, dict):
        raise FilterError(NOT_AN_OBJECT)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_query(multi_items: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Nested dicts and lists from decoded query items, exactly as `qs.parse` builds them."""
    flat: dict[str, Any] = {}
    for key, value in multi_items[:PARAMETER_LIMIT]:
        if key in flat:
            flat[key] = _combine(flat[key], value)
        else:
            flat[key] = value
    result: Any = {}
    for key, value in flat.items():
        if key:
            result = _merge(result, _parse_key(key, value))
    compacted = _compact(result)
    assert isinstance(compacted, dict)
    return compacted


def _combine(existing: Any, value: str) -> list[Any]:
    """`[].concat(a, b)`."""
    return [*existing, value] if isinstance(existing, list) else [existing, value]


def _parse_key(key: str, value: Any) -> Any:
    first = _SEGMENT.search(key)
    parent = key[: first.start()] if first else key
    chain = [parent] if parent else []
    segment: re.Match[str] | None = None
    for count, segment in enumerate(_SEGMENT.finditer(key)):
        if count == DEPTH:
            break
        chain.append(segment.group())
    else:
        segment = None
    if segment is not None:
        chain.append("[" + key[segment.start() :] + "]")
    leaf = value
    for root in reversed(chain):
        leaf = _wrap(root, leaf)
    return leaf


def _wrap(root: str, leaf: Any) -> Any:
    if root == "[]":
        return list(leaf) if isinstance(leaf, list) else [leaf]
    clean = root[1:-1] if root.startswith("[") and root.endswith("]") else root
    if clean != root and _INDEX.fullmatch(clean) and int(clean) <= ARRAY_LIMIT:
        return [_HOLE] * int(clean) + [leaf]
    if clean == "__proto__":
        return {}
    return {clean: leaf}


def _merge(target: Any, source: Any) -> Any:
    """qs `utils.merge`, with JavaScript truthiness (only "" is a falsy value here)."""
    if source == "":
        return target
    if not isinstance(source, (dict, list)):
        if isinstance(target, list):
            target.append(source)
        elif isinstance(target, dict):
            target[source] = True
        else:
            return [target, source]
        return target
    if not isinstance(target, (dict, list)):
        return [target, *source] if isinstance(source, list) else [target, source]
    if isinstance(target, list) and isinstance(source, list):
        for index, item in enumerate(source):
            if item is _HOLE:
                continue
            if index < len(target) and target[index] is not _HOLE:
                current = target[index]
                if isinstance(current, (dict, list)) and isinstance(item, (dict, list)):
                    target[index] = _merge(current, item)
                else:
                    target.append(item)
            else:
                target.extend([_HOLE] * (index + 1 - len(target)))
                target[index] = item
        return target
    merged = _array_to_object(target) if isinstance(target, list) else target
    for key, value in _entries(source):
        merged[key] = _merge(merged[key], value) if key in merged else value
    return merged


def _entries(value: dict[str, Any] | list[Any]) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return list(value.items())
    return [(str(index), item) for index, item in enumerate(value) if item is not _HOLE]


def _array_to_object(items: list[Any]) -> dict[str, Any]:
    return dict(_entries(items))


def _compact(value: Any) -> Any:
    if isinstance(value, list):
        return [_compact(item) for item in value if item is not _HOLE]
    if isinstance(value, Mapping):
        return {key: _compact(item) for key, item in value.items()}
    return value
