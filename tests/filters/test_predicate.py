"""`predicate`: the where language evaluated against JSON-form rows, and its LIKE matcher."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.filters import predicate as predicate_module
from gateway.filters.ast import And, Condition, Op, Or
from gateway.filters.parse import parse_where
from gateway.filters.predicate import _Like, compile_predicate

from .cases import ROWS, TODO, WHERE_CASES


def matches(raw_where: Any, row: dict[str, Any]) -> bool:
    return compile_predicate(TODO, parse_where(TODO, raw_where))(row)


@pytest.mark.parametrize(("raw", "expected"), WHERE_CASES)
def test_where_cases(raw: Any, expected: set[int]) -> None:
    matcher = compile_predicate(TODO, parse_where(TODO, raw))
    assert {row["id"] for row in ROWS if matcher(row)} == expected


def test_no_where_matches_everything() -> None:
    always = compile_predicate(TODO, None)
    assert always({}) is True
    assert always({"id": 1}) is True
    assert always({"anything": object()}) is True


def test_empty_and_or() -> None:
    assert compile_predicate(TODO, And(()))({}) is True
    assert compile_predicate(TODO, Or(()))({}) is False
    assert compile_predicate(TODO, Or((And(()),)))({}) is True


# A row value of the wrong type (never produced by to_json_row) counts as NULL.
MISTYPED: list[tuple[dict[str, Any], Any, bool]] = [
    ({"title": 5}, {"title": None}, True),
    ({"title": 5}, {"title": "5"}, False),
    ({"title": 5}, {"title": {"nlike": "5"}}, True),
    ({"title": ["a"]}, {"title": {"nin": ["a"]}}, True),
    ({"priority": True}, {"priority": 1}, False),
    ({"priority": True}, {"priority": None}, True),
    ({"priority": "3"}, {"priority": {"gt": 1}}, False),
    ({"priority": "3"}, {"priority": {"neq": 3}}, True),
    ({"done": 1}, {"done": True}, False),
    ({"done": 0}, {"done": None}, True),
    ({"due": "yesterday"}, {"due": None}, True),
    ({"due": 1767225600000}, {"due": 1767225600000}, False),
    ({"id": "1"}, {"id": 1}, False),
    ({"id": 1.0}, {"id": 1}, True),
]


@pytest.mark.parametrize(("row", "raw", "expected"), MISTYPED)
def test_mistyped_row_values_are_null(row: dict[str, Any], raw: Any, expected: bool) -> None:
    assert matches(raw, row) is expected


DATES: list[tuple[Any, bool]] = [
    ("2026-01-01T00:00:00.000Z", True),
    ("2026-01-01T00:00:00Z", True),
    ("2026-01-01T00:00:00.0001Z", True),
    ("2026-01-01T01:00:00.000+01:00", True),
    ("2026-01-01", True),
    (datetime(2026, 1, 1), True),
    (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), True),
    (datetime(2026, 1, 1, tzinfo=UTC), True),
    ("2026-01-01T00:00:00.001Z", False),
    ("2025-12-31T23:59:59.999Z", False),
]


@pytest.mark.parametrize(("value", "equal"), DATES)
def test_row_dates_in_any_form_compare_as_instants(value: Any, equal: bool) -> None:
    assert matches({"due": "2026-01-01T00:00:00.000Z"}, {"due": value}) is equal
    assert matches({"due": {"lte": "2026-01-01T00:00:00.000Z"}}, {"due": value}) is (
        equal or value == "2025-12-31T23:59:59.999Z"
    )


def test_canonical_dates_are_compared_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    matcher = compile_predicate(TODO, parse_where(TODO, {"due": {"between": ["2025-01-01", "2027-01-01"]}}))

    def forbidden(value: Any) -> datetime:
        raise AssertionError(f"parsed {value!r} on the hot path")

    monkeypatch.setattr(predicate_module, "parse_date", forbidden)
    assert matcher({"due": "2026-01-01T00:00:00.000Z"}) is True
    assert matcher({"due": "2028-01-01T00:00:00.000Z"}) is False
    assert matcher({}) is False


def test_dates_before_year_1000_still_order_correctly() -> None:
    where = Condition("due", Op.LT, datetime(1000, 1, 1))
    matcher = compile_predicate(TODO, where)
    assert matcher({"due": "0999-12-31T23:59:59.999Z"}) is True
    assert matcher({"due": "1000-01-01T00:00:00.000Z"}) is False


def test_numbers_compare_across_int_and_float() -> None:
    assert matches({"priority": 3}, {"priority": 3}) is True
    assert matches({"priority": 3}, {"priority": 3.0}) is True
    assert matches({"priority": {"inq": [3]}}, {"priority": 3}) is True
    assert matches({"priority": {"gt": 2.5}}, {"priority": 3}) is True
    assert matches({"priority": 0}, {"priority": -0.0}) is True
    assert matches({"priority": {"between": [-1, 1]}}, {"priority": 2**53 + 1}) is False


def test_ilike_folds_like_python() -> None:
    assert matches({"title": {"ilike": "É%"}}, {"title": "école"}) is True
    assert matches({"title": {"ilike": "%ж"}}, {"title": "ДЖ"}) is True
    assert matches({"title": {"ilike": "STRASSE"}}, {"title": "straße"}) is False
    assert matches({"title": {"nilike": "ABC"}}, {"title": "abc"}) is False
    assert matches({"title": {"nilike": "ABC"}}, {}) is True


def test_regexp_searches_and_honours_the_i_flag() -> None:
    assert matches({"title": {"regexp": "b"}}, {"title": "abc"}) is True
    assert matches({"title": {"regexp": "^b"}}, {"title": "abc"}) is False
    assert matches({"title": {"regexp": "/B/"}}, {"title": "abc"}) is False
    assert matches({"title": {"regexp": "/B/i"}}, {"title": "abc"}) is True
    assert matches({"title": {"regexp": "/É/i"}}, {"title": "été"}) is True
    assert matches({"title": {"regexp": "x"}}, {}) is False


LIKE: list[tuple[str, str, bool]] = [
    ("", "", True),
    ("", "a", False),
    ("%", "", True),
    ("%", "anything", True),
    ("%%", "", True),
    ("_", "", False),
    ("_", "a", True),
    ("_", "ab", False),
    ("a", "a", True),
    ("a", "A", False),
    ("a%", "abc", True),
    ("a%", "ba", False),
    ("%a", "ba", True),
    ("%a", "ab", False),
    ("a%b", "ab", True),
    ("a%b", "a", False),
    ("a%b", "axxb", True),
    ("a%b", "axxbx", False),
    ("%a%", "bab", True),
    ("%a%", "bbb", False),
    ("a_c", "abc", True),
    ("a_c", "ac", False),
    ("a_c", "abbc", False),
    ("%b%b%", "abcb", True),
    ("%b%b%", "ab", False),
    ("%bb", "bbb", True),
    ("b%b", "b", False),
    ("ab%ba", "aba", False),
    ("ab%ba", "abba", True),
    ("%a%%b", "ab", True),
    ("_%_", "a", False),
    ("_%_", "ab", True),
    ("%ab%ab%", "abab", True),
    ("%ab%ab%", "aabb", False),
    ("%aab", "aaab", True),
    ("\\%", "%", True),
    ("\\%", "a", False),
    ("\\_", "_", True),
    ("\\_", "a", False),
    ("\\\\", "\\", True),
    ("\\\\%", "\\x", True),
    ("\\a", "a", True),
    ("%\\%%", "50% off", True),
    ("a.c", "abc", False),
    ("%.%", "a.b", True),
    ("[a]", "[a]", True),
    ("[a]", "a", False),
    ("(a|b)*", "(a|b)*", True),
    ("_", "\n", True),
    ("%", "\n\n", True),
    ("a%z", "a\nz", True),
    ("😀_", "😀x", True),
    ("_", "😀", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), LIKE)
def test_like_matcher(pattern: str, text: str, expected: bool) -> None:
    assert _Like(pattern)(text) is expected


def _like_as_regex(pattern: str) -> re.Pattern[str]:
    """The obvious translation of LIKE, as a reference (it can backtrack badly; fine on short inputs)."""
    parts, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append({"%": ".*", "_": "."}.get(char, re.escape(char)))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


LIKE_TOKENS = st.sampled_from(["a", "b", "%", "_", "\\%", "\\_", "\\\\", ".", "\n"])


@given(st.lists(LIKE_TOKENS, max_size=8).map("".join), st.text("ab%_\\.\n", max_size=10))
def test_like_matcher_equals_the_regex_translation(pattern: str, text: str) -> None:
    assert _Like(pattern)(text) is (_like_as_regex(pattern).fullmatch(text) is not None)


def test_like_cannot_be_made_slow() -> None:
    matcher = _Like("%a%a%a%a%a%a%a%b")
    text = "a" * 20_000
    started = time.perf_counter()
    assert matcher(text) is False
    assert time.perf_counter() - started < 0.5


def test_regexp_cannot_be_made_slow() -> None:
    """`(a+)+$` backtracks exponentially in Python's `re` (for 40 `a`s: hours); RE2 runs it in linear time."""
    matcher = compile_predicate(TODO, parse_where(TODO, {"title": {"regexp": "(a+)+$"}}))
    started = time.perf_counter()
    assert matcher({"title": "a" * 5000 + "!"}) is False
    assert time.perf_counter() - started < 0.5


def test_a_compiled_predicate_is_reusable() -> None:
    matcher = compile_predicate(TODO, parse_where(TODO, {"or": [{"title": {"like": "a%"}}, {"done": True}]}))
    assert [matcher(row) for row in ROWS] == [matcher(row) for row in ROWS]
    assert [row["id"] for row in ROWS if matcher(row)] == [1, 2, 4, 7]
