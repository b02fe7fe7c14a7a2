"""Evaluate a parsed where clause in process, against the JSON form of a row (`to_json_row`).

This runs once per streamed change per distinct filter, so the tree is compiled once into closures: the call
itself does a dict lookup, a type check and a comparison per condition, and nothing is parsed again.
The semantics are exactly those of `sql.py` (the agreement test holds them together):
- A missing key is NULL. `eq`/`gt`/`gte`/`lt`/`lte`/`between`/`inq`/`like`/`ilike`/`regexp` never match
  NULL; `neq`/`nin`/`nlike`/`nilike` do. `inq []` matches nothing and `nin []` everything.
- Strings compare by code point; dates compare as instants (the canonical `...T..:..:..mmmZ` strings of the
  JSON form order like the instants, so they are compared as text without parsing).
- A value of the wrong type in the row (never produced by `to_json_row`) is treated as NULL.
- LIKE is matched segment by segment without backtracking, and `regexp` runs on RE2 (`gateway/regex.py`),
  so no pattern can make either slow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, TypeAlias

from gateway.filters.ast import And, Condition, Op, Regexp, Where
from gateway.models.definition import ModelDef, PropertyDef, PropertyType
from gateway.models.rows import parse_date
from gateway.regex import compile_search

Row: TypeAlias = Mapping[str, Any]
Predicate: TypeAlias = Callable[[Row], bool]
_Reader: TypeAlias = Callable[[Row], Any]
_CANONICAL_DATE_LENGTH: Final = len("2026-11-28T00:01:01.000Z")


def compile_predicate(model: ModelDef, where: Where | None) -> Predicate:
    """A function telling whether a JSON-form row of `model` matches `where` (None matches every row)."""
    if where is None:
        return _always
    return _compile(model, where)


def _always(row: Row) -> bool:
    return True


def _never(row: Row) -> bool:
    return False


def _compile(model: ModelDef, node: Where) -> Predicate:
    if isinstance(node, Condition):
        return _condition(model.by_name[node.prop], node)
    parts = tuple(_compile(model, item) for item in node.items)
    if len(parts) == 1:
        return parts[0]
    if isinstance(node, And):
        if not parts:
            return _always

        def all_of(row: Row) -> bool:
            for part in parts:  # noqa: SIM110 - all() would allocate a generator per row
                if not part(row):
                    return False
            return True

        return all_of
    if not parts:
        return _never

    def any_of(row: Row) -> bool:
        for part in parts:  # noqa: SIM110 - any() would allocate a generator per row
            if part(row):
                return True
        return False

    return any_of


def _condition(prop: PropertyDef, condition: Condition) -> Predicate:
    read = _reader(prop)
    op, value = condition.op, condition.value
    key = _date_key if prop.type is PropertyType.DATE else _identity
    if op is Op.EQ:
        if value is None:
            return lambda row: read(row) is None
        expected = key(value)
        return lambda row: read(row) == expected
    if op is Op.NEQ:
        if value is None:
            return lambda row: read(row) is not None
        unexpected = key(value)

        def differs(row: Row) -> bool:
            actual = read(row)
            return actual is None or actual != unexpected

        return differs
    if op in (Op.INQ, Op.NIN):
        members = frozenset(key(item) for item in value)  # never holds None, so NULL is "not in"
        if op is Op.INQ:
            return lambda row: read(row) in members
        return lambda row: read(row) not in members
    if op is Op.BETWEEN:
        low, high = key(value[0]), key(value[1])

        def between(row: Row) -> bool:
            actual = read(row)
            return actual is not None and low <= actual <= high

        return between
    if op in _ORDERINGS:
        return _ordering(read, _ORDERINGS[op], key(value))
    if op is Op.REGEXP:
        assert isinstance(value, Regexp)
        return _matching(read, compile_search(value.pattern, ignore_case=value.ignore_case), negate=False)
    fold = op in (Op.ILIKE, Op.NILIKE)
    like = _Like(value.lower() if fold else value)
    match = (lambda text: like(text.lower())) if fold else like
    return _matching(read, match, negate=op in (Op.NLIKE, Op.NILIKE))


_ORDERINGS: Final[dict[Op, Callable[[Any, Any], bool]]] = {
    Op.GT: lambda actual, bound: actual > bound,
    Op.GTE: lambda actual, bound: actual >= bound,
    Op.LT: lambda actual, bound: actual < bound,
    Op.LTE: lambda actual, bound: actual <= bound,
}


def _ordering(read: _Reader, compare: Callable[[Any, Any], bool], bound: Any) -> Predicate:
    def ordered(row: Row) -> bool:
        actual = read(row)
        return actual is not None and compare(actual, bound)

    return ordered


def _matching(read: _Reader, match: Callable[[str], bool], *, negate: bool) -> Predicate:
    if negate:
        return lambda row: (text := read(row)) is None or not match(text)
    return lambda row: (text := read(row)) is not None and match(text)


def _reader(prop: PropertyDef) -> _Reader:
    """Reads the property from a row, normalised for comparison; None for NULL (or a mistyped value)."""
    name = prop.name
    if prop.type is PropertyType.STRING:
        return lambda row: value if isinstance(value := row.get(name), str) else None
    if prop.type is PropertyType.BOOLEAN:
        return lambda row: value if isinstance(value := row.get(name), bool) else None
    if prop.type is PropertyType.NUMBER:
        return lambda row: value if type(value := row.get(name)) in (int, float) else None
    return lambda row: _date_key(row.get(name))


def _identity(value: Any) -> Any:
    return value


def _date_key(value: Any) -> str | None:
    """A date as its canonical JSON text (`2026-11-28T00:01:01.000Z`), which sorts like the instant."""
    if isinstance(value, str):
        if len(value) == _CANONICAL_DATE_LENGTH and value[23] == "Z" and value[10] == "T" and value[4] == "-":
            return value
        try:
            value = parse_date(value)
        except (ValueError, OverflowError, OSError):
            return None
    if isinstance(value, datetime):
        value = parse_date(value.isoformat()) if value.tzinfo is not None else value
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond // 1000:03d}Z"
        )
    return None


class _Like:
    """SQL LIKE (`%`, `_`, `\\` escapes) on whole strings, in O(len(text) * len(pattern)).

    The pattern is split at `%` into fixed-length segments: the first must match at the start, the last at
    the end, and each middle one is found leftmost after the previous, which is optimal for wildcards.
    Segments without `_` are plain text and use `str` methods; the others a small regex.
    """

    __slots__ = ("_exact", "_head", "_head_length", "_middle", "_tail", "_tail_length")

    def __init__(self, pattern: str) -> None:
        segments: list[list[str | None]] = [[]]  # characters; None stands for `_`
        index = 0
        while index < len(pattern):
            char = pattern[index]
            if char == "\\":
                segments[-1].append(pattern[index + 1])
                index += 2
                continue
            if char == "%":
                segments.append([])
            else:
                segments[-1].append(None if char == "_" else char)
            index += 1
        compiled = [_segment(chars) for chars in segments]
        self._exact = compiled[0] if len(segments) == 1 else None
        self._head, self._head_length = compiled[0], len(segments[0])
        self._tail, self._tail_length = compiled[-1], len(segments[-1])
        self._middle = tuple(c for c, chars in zip(compiled[1:-1], segments[1:-1], strict=True) if chars)

    def __call__(self, text: str) -> bool:
        exact = self._exact
        if exact is not None:
            return text == exact if isinstance(exact, str) else exact.fullmatch(text) is not None
        end = len(text) - self._tail_length
        if end < self._head_length:
            return False
        head, tail = self._head, self._tail
        if not (text.startswith(head) if isinstance(head, str) else head.match(text) is not None):
            return False
        if not (text.endswith(tail) if isinstance(tail, str) else tail.match(text, end) is not None):
            return False
        position = self._head_length
        for segment in self._middle:
            if isinstance(segment, str):
                found = text.find(segment, position, end)
                if found < 0:
                    return False
                position = found + len(segment)
            else:
                match = segment.search(text, position, end)
                if match is None:
                    return False
                position = match.end()
        return True


def _segment(chars: list[str | None]) -> str | re.Pattern[str]:
    """Plain text, or a regex where `_` (None) matches any one character."""
    if None not in chars:
        return "".join(c for c in chars if c is not None)
    return re.compile("".join("." if c is None else re.escape(c) for c in chars), re.DOTALL)
