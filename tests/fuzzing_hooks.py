"""Schemathesis hooks of the fuzzing (tests/fuzzing.py loads them through SCHEMATHESIS_HOOKS).

One narrowing, per parameter value: a `regexp` operand is documented as a string, but whether RE2 compiles
it is not something JSON Schema can say, so a positive case whose pattern RE2 refuses is not generated
(the gateway rightly answers it with a 400, tested in tests/filters). Negative cases are left as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import schemathesis

from gateway.filters import FilterError
from gateway.filters.parse import regexp_operand


def regexp_operands(value: Any) -> Iterator[Any]:
    """Every value under a `regexp` key in a query or body, JSON text decoded."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "regexp":
                yield item
            yield from regexp_operands(item)
    elif isinstance(value, list):
        for item in value:
            yield from regexp_operands(item)


def compiles(operand: Any) -> bool:
    if not isinstance(operand, str):
        return True  # a non-string is schema-invalid anyway
    try:
        regexp_operand(operand)
    except FilterError:
        return False
    return True


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    return all(compiles(operand) for operand in regexp_operands(case.query or {}))
