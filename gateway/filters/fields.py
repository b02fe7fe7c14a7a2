"""Project a JSON-form row onto a filter's `fields`.

Rows from `to_json_row` are already in model property order, and LoopBack replies keep model order rather
than the order the client listed, so the row's own order is kept. Keys a row lacks (NULL properties, or a
remove event with no data) are simply absent from the result: projection never fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def project(row: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """The row restricted to `fields` (None keeps every key), as a new dict in the row's key order."""
    if fields is None:
        return dict(row)
    wanted = frozenset(fields)
    return {key: value for key, value in row.items() if key in wanted}
