"""Snapshot over SSE (`snapshot=true`): the matching rows as `create` events, then live from one position.

Kubernetes' `sendInitialEvents` for change streams (DESIGN §4.2a). The subscriber registers first, so its
position is taken before the query: every entry at or before it is committed and so in the rows read, and
every entry after it is replayed from the broker behind `event: snapshot-end`, whose `id:` is that position.
A write that committed between the two may show in the rows and arrive again as a change after
`snapshot-end`; changes carry full rows, so applying them idempotently is exact.

The rows' frames carry no `id:`, so a reconnect during the snapshot (which sends no `Last-Event-ID`, or the
one it had before) starts it again, and a reconnect after `snapshot-end` resumes from there. The rows are read
before the `200`, so a snapshot over `GATEWAY_SNAPSHOT_MAX_ROWS` is a 400 that says to page instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.filters import Filter, Where
from gateway.filters.fields import project
from gateway.models.definition import ModelDef
from gateway.rest.errors import LoopBackError
from gateway.rest.reads import ModelReads
from gateway.sse.frames import Format, control_frame

TRUE = ("true", "1")


def wants_snapshot(query: Mapping[str, str], options: Mapping[str, Any]) -> bool:
    """`snapshot=true` in the query string, or `"snapshot": true` in `options`."""
    value = options.get("snapshot", query.get("snapshot"))
    if isinstance(value, str):
        return value.strip().lower() in TRUE
    return value is True


class Snapshots:
    """Reads a model's rows for a snapshot, bounded, and encodes them as the frames that open the stream."""

    def __init__(self, reads: Mapping[str, ModelReads], max_rows: int) -> None:
        self._reads = reads
        self._max_rows = max_rows

    async def frames(
        self, model: ModelDef, where: Where | None, fields: tuple[str, ...] | None, fmt: Format, position: str
    ) -> bytes:
        """One `create` frame per matching row (by id), then `snapshot-end` at `position`; raises a 400
        when more rows match than the bound."""
        rows = await self._reads[model.name].find(Filter(where, (), self._max_rows + 1, 0, None))
        if len(rows) > self._max_rows:
            raise LoopBackError(
                400,
                f"The snapshot would have more than {self._max_rows} rows (GATEWAY_SNAPSHOT_MAX_ROWS): "
                f"page with GET {model.plural}?filter=... and its X-Change-Stream-Position header, "
                "then open the stream with lastEventId=<that position>, or narrow options.where",
                code="SNAPSHOT_TOO_LARGE",
            )
        id_name = model.id_name
        parts = [
            _create_frame(fmt, {"target": row[id_name], "data": project(row, fields), "type": "create"})
            for row in rows
        ]
        parts.append(control_frame(fmt, "snapshot-end", position, {"position": position}))
        return b"".join(parts)


def _create_frame(fmt: Format, change: dict[str, Any]) -> bytes:
    payload = orjson.dumps(change)
    if fmt is Format.SSE:
        return b"event: data\ndata: " + payload + b"\n\n"
    return b'{"event":"data","data":' + payload + b"}\n"
