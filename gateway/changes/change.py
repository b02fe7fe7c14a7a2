"""Change objects: what a subscriber receives for each committed write (DESIGN §4.3).

Keys are `target, where, data, type`, in that order, absent keys omitted, exactly as LoopBack serialises its
change objects. The object is encoded once, when the write commits, and those bytes are what every subscriber
of an unfiltered stream receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.models.definition import ModelDef

ChangeType = Literal["create", "update", "remove"]


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one row, with the row as it was before (internal, never sent as such)."""

    type: ChangeType
    target: Any
    data: dict[str, Any] | None  # the full row after the write; None for a remove
    where: dict[str, Any] | None = None
    before: dict[str, Any] | None = None  # the full row before an update or a remove

    def to_object(self) -> dict[str, Any]:
        """The client-facing change object, keys in LoopBack's order."""
        change: dict[str, Any] = {"target": self.target}
        if self.where is not None:
            change["where"] = self.where
        if self.data is not None:
            change["data"] = self.data
        change["type"] = self.type
        return change

    def encode(self) -> bytes:
        return orjson.dumps(self.to_object())

    def encode_before(self) -> bytes | None:
        return None if self.before is None else orjson.dumps(self.before)


def created(model: ModelDef, row: dict[str, Any]) -> Change:
    return Change("create", row[model.id_name], row)


def updated(
    model: ModelDef, row: dict[str, Any], before: dict[str, Any], *, with_where: bool = False
) -> Change:
    """An update; `with_where` marks the per-row changes of `updateAll`, which LoopBack sends with `where`."""
    target = row[model.id_name]
    where = {model.id_name: target} if with_where else None
    return Change("update", target, row, where=where, before=before)


def removed(model: ModelDef, before: dict[str, Any]) -> Change:
    target = before[model.id_name]
    return Change("remove", target, None, where={model.id_name: target}, before=before)
