"""What one filtered subscriber sees of one change (pure; no I/O).

`options.where` is evaluated against the full row: after the write for a create or update, before it for a
remove (DESIGN §4.3). An update that moves a row out of the subscriber's filter arrives as a `remove`, one
that moves it in arrives as a `create`, so a client that keeps a filtered live set stays exact. `fields`
projects `data` and has nothing to do on a remove (LoopBack crashed there; LOOPBACK3.md §3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.filters import project

Predicate = Callable[[Mapping[str, Any]], bool]


def filtered_change(
    change: Mapping[str, Any],
    before: Mapping[str, Any] | None,
    *,
    id_name: str,
    predicate: Predicate | None,
    fields: tuple[str, ...] | None,
) -> dict[str, Any] | None:
    """The change object this subscriber receives, or None when the change is not for it."""
    kind = change["type"]
    data = change.get("data")
    if kind == "remove":
        if predicate is not None and (before is None or not predicate(before)):
            return None
        return dict(change)
    now_in = predicate is None or (data is not None and predicate(data))
    if kind == "create":
        return _with_data(change, data, fields, "create") if now_in else None
    was_in = predicate is None or (before is not None and predicate(before))
    if now_in and was_in:
        return _with_data(change, data, fields, "update")
    if now_in:
        return _with_data(change, data, fields, "create", keep_where=False)
    if was_in:
        target = change["target"]
        return {"target": target, "where": {id_name: target}, "type": "remove"}
    return None


def _with_data(
    change: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    fields: tuple[str, ...] | None,
    kind: str,
    *,
    keep_where: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {"target": change["target"]}
    if keep_where and "where" in change:
        out["where"] = change["where"]
    if data is not None:
        out["data"] = project(dict(data), fields) if fields is not None else data
    out["type"] = kind
    return out
