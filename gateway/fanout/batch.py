"""One group's frames of one broker batch, built once and offered to every connection of the group.

Most live connections are idle when a batch arrives (nothing waits in their queue, no write under way), so
for them the whole batch is one write of the same bytes: joined here once per group, not once per
connection, and kept in the form the outlet writes (`wire`, e.g. an HTTP chunk) by the first outlet that
needs it, for the others to reuse.
"""

from __future__ import annotations


class Batch:
    """Frames for consecutive entries of one stream, in order, with the offset of each."""

    __slots__ = ("body", "frames", "offset", "offsets", "wire")

    def __init__(self, frames: list[bytes], offsets: list[str]) -> None:
        self.frames = frames
        self.offsets = offsets
        self.offset = offsets[-1]  # of the newest frame: the position a connection is at once it has them
        self.body = frames[0] if len(frames) == 1 else b"".join(frames)
        self.wire: bytes | None = None
