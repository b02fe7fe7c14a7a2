"""The validated form of a LoopBack filter: what `parse` produces and what `sql` and `predicate` consume.

Every value in the tree is already coerced to its property's type (float for numbers, int for a numeric id,
bool, naive-UTC datetime for dates, str), so the two back ends never see request text and never disagree
about what a value means. All nodes are frozen and hashable: a caller may cache compiled predicates by
`(model name, where)`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeAlias


class FilterError(ValueError):
    """A filter the gateway refuses; the message is shown to the client in a 400."""


class Op(enum.Enum):
    """The comparison operators of LoopBack's where language."""

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"
    INQ = "inq"
    NIN = "nin"
    LIKE = "like"
    NLIKE = "nlike"
    ILIKE = "ilike"
    NILIKE = "nilike"
    REGEXP = "regexp"


@dataclass(frozen=True, slots=True)
class Regexp:
    """A `regexp` operand: a Python-`re`-compatible pattern and whether the JS `i` flag was given."""

    pattern: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class Condition:
    """`prop op value`.

    `value` is None only for `eq`/`neq` (IS NULL / IS NOT NULL); a `(low, high)` tuple for `between`;
    a tuple for `inq`/`nin`; a LIKE pattern (`%`, `_`, `\\` escapes) for the like family; a `Regexp`
    for `regexp`; otherwise one coerced scalar.
    """

    prop: str
    op: Op
    value: Any


@dataclass(frozen=True, slots=True)
class And:
    """All items hold; no items means everything matches."""

    items: tuple[Where, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item holds; no items means nothing matches."""

    items: tuple[Where, ...]


Where: TypeAlias = Condition | And | Or


@dataclass(frozen=True, slots=True)
class OrderBy:
    prop: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Filter:
    """A whole LoopBack filter.

    `limit` None means no limit; `fields` None means every (visible) property, otherwise the names to keep in
    model property order.
    """

    where: Where | None = None
    order: tuple[OrderBy, ...] = ()
    limit: int | None = None
    skip: int = 0
    fields: tuple[str, ...] | None = None
