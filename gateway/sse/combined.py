"""The wire side of a multiplexed stream (pure): one event id covering every model, and relabelled frames.

A multiplexed connection carries one per-model stream for each model; each of them writes its usual SSE
frames (`gateway.sse.frames`). `relabel` turns those into the connection's frames: a change, `reset`,
`snapshot-end` or `error` object gains `"model"` first, and every `id:` becomes the connection's combined
position, `Todo:<position>,Color:<position>` (about 30 bytes a model, in the order of `models=`). A browser's
`EventSource` sends the last one back as `Last-Event-ID`, and each model resumes from its own part, on any
worker. A model missing from an id that was sent is told `reset` (its part is unknown), never resumed from
its head, which could skip changes; with `snapshot=true` it gets a snapshot instead, so a client re-lists
one model by leaving its part out.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

UNKNOWN = "unknown"
"""What a model resumes from when the id sent back has no part for it: not a position, so it gets `reset`."""


class CombinedPosition:
    """Each model's last position sent on one connection, and the `id:` that says all of them."""

    def __init__(self, models: Sequence[str], resume: str | None) -> None:
        self.models = tuple(models)
        self.resuming = resume is not None
        self.positions: dict[str, str] = {}
        for part in (resume or "").split(","):
            name, sep, position = part.strip().partition(":")
            if sep and name in self.models and position:
                self.positions[name] = position

    def resume_for(self, model: str, *, snapshot: bool) -> str | None:
        """The position `model`'s stream resumes from: None (start afresh) on a new connection, or for a
        model without a part when a snapshot is asked for (that is how a client re-lists one model)."""
        if not self.resuming:
            return None
        if model not in self.positions and snapshot:
            return None
        return self.positions.get(model, UNKNOWN)

    def encode(self) -> bytes:
        return ",".join(f"{m}:{self.positions[m]}" for m in self.models if m in self.positions).encode()


def relabel(model: str, body: bytes, position: CombinedPosition) -> bytes:
    """`model`'s stream output (whole SSE frames) as frames of the multiplexed connection; the preamble is
    dropped (the connection sends its own) and `position` is moved forward by each `id:`."""
    label = b'{"model":' + orjson.dumps(model)
    out = []
    for frame in body.split(b"\n\n"):
        if not frame or frame.startswith(b"retry:"):
            continue
        if frame.startswith(b":"):
            out.append(frame + b"\n\n")
            continue
        lines = []
        for line in frame.split(b"\n"):
            if line.startswith(b"id: "):
                position.positions[model] = line[4:].decode()
                lines.append(b"id: " + position.encode())
            elif line.startswith(b"data: {"):
                rest = line[7:]
                lines.append(b"data: " + label + (rest if rest.startswith(b"}") else b"," + rest))
            else:
                lines.append(line)
        out.append(b"\n".join(lines) + b"\n\n")
    return b"".join(out)
