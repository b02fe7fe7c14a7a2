"""How deep and how big a client's JSON may be, checked without recursion before anything walks it.

The parsers, validators and encoders downstream recurse: the stdlib `json` fails near 500 levels, orjson
encodes no more than 254, SQLite refuses an expression tree of 1,000 terms. Without a limit checked up
front, a request nested or spread past any of those was a 500; with it, it is a 400 that names the limit.
"""

from __future__ import annotations

from typing import Any, Final

FILTER_MAX_DEPTH: Final = 32
"""Levels of objects and arrays in a `filter`, `where` or `options` argument."""
FILTER_MAX_NODES: Final = 10_000
"""Objects, arrays and values in one such argument (an `inq` list counts each element)."""
BODY_MAX_DEPTH: Final = 64
"""Levels of objects and arrays in a request body (orjson cannot encode more than 254)."""


class ShapeError(ValueError):
    """The JSON is nested deeper, or holds more, than its limit; the message says which limit."""


def check_shape(value: Any, *, what: str, max_depth: int, max_nodes: int | None = None) -> None:
    """Raise `ShapeError` if `value` nests deeper than `max_depth` or holds more than `max_nodes` items."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            raise ShapeError(f"The {what} holds more than {max_nodes} values")
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ShapeError(f"The {what} is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def check_text(value: Any, *, what: str) -> None:
    """Raise `ShapeError` if a string of `value` (a key or a value) is not Unicode text: JSON's `\\ud800`
    escape decodes to a lone surrogate, which no database, encoder or log line can take."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                raise ShapeError(f"The {what} holds a lone surrogate (a \\u escape), not text") from None
