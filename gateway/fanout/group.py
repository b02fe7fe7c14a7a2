"""Subscribers that want the same thing share one encoding of every event.

A group is keyed by (format, where, fields): all its subscribers receive the same bytes for an entry, so the
entry is filtered, projected and encoded once per group per worker, however many connections it has. The
entry itself is decoded once per worker (and not at all for unfiltered groups, which send the stored JSON
as it is).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.broker.base import Entry
from gateway.broker.continuity import format_position
from gateway.fanout.batch import Batch
from gateway.fanout.framing import Framing
from gateway.fanout.queue import DeliveryQueue
from gateway.fanout.view import Predicate, filtered_change

GroupKey = tuple[Framing, str, str]
"""(format, where, fields): subscribers with the same key share every frame."""


class DecodedEntry:
    """An entry as the hub handles it: its position bytes, and its JSON decoded on first need only."""

    __slots__ = ("_before", "_change", "entry", "offset", "position")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.offset = entry.offset
        self.position = format_position(entry.epoch, entry.offset).encode()
        self._change: dict[str, Any] | None = None
        self._before: dict[str, Any] | None = None

    def change(self) -> dict[str, Any]:
        if self._change is None:
            self._change = orjson.loads(self.entry.change)
        return self._change

    def before(self) -> dict[str, Any] | None:
        if self._before is None and self.entry.before is not None:
            self._before = orjson.loads(self.entry.before)
        return self._before


class Group:
    """Subscribers of one stream with the same format and options."""

    __slots__ = ("_bookmark", "fields", "filtered", "fmt", "id_name", "key", "predicate", "queues")

    def __init__(
        self,
        key: GroupKey,
        *,
        id_name: str,
        predicate: Predicate | None,
        fields: tuple[str, ...] | None,
    ) -> None:
        self.key = key
        self.fmt = key[0]
        self.id_name = id_name
        self.predicate = predicate
        self.fields = fields
        self.filtered = predicate is not None or fields is not None
        self.queues: dict[DeliveryQueue, None] = {}
        self._bookmark = (b"", b"")  # (position, frame): the latest bookmark, built once per tick at most

    def frame(self, entry: DecodedEntry) -> bytes | None:
        """This group's frame for `entry`, or None when the change is not for it."""
        if not self.filtered:
            return self.fmt.data(entry.position, entry.entry.change)
        change = filtered_change(
            entry.change(),
            entry.before(),
            id_name=self.id_name,
            predicate=self.predicate,
            fields=self.fields,
        )
        if change is None:
            return None
        return self.fmt.data(entry.position, orjson.dumps(change))

    def batch(self, entries: list[DecodedEntry]) -> Batch | None:
        """This group's frames for `entries`, or None when none of the changes is for it."""
        frames: list[bytes] = []
        offsets: list[str] = []
        for entry in entries:
            frame = self.frame(entry)
            if frame is not None:
                frames.append(frame)
                offsets.append(entry.offset)
        return Batch(frames, offsets) if frames else None

    def bookmark(self, position: bytes) -> bytes:
        """The bookmark frame of `position`, shared by every connection of the group that needs one."""
        if self._bookmark[0] != position:
            self._bookmark = (position, self.fmt.bookmark(position))
        return self._bookmark[1]
