"""How a group's frames are written: the one thing the fan-out needs to know of the wire.

The wire formats (SSE, NDJSON) belong to `gateway.sse.frames`, whose `Format` members implement this; the
hub and readers only call it, so `fanout/` does not depend on `sse/` (which depends on `fanout/`).
"""

from __future__ import annotations

from typing import Any, Protocol


class Framing(Protocol):
    """Builds a group's frames as bytes, once, to be shared by every connection of the group."""

    @property
    def ping(self) -> bytes:
        """A heartbeat that fires nothing in the client."""
        ...

    def data(self, position: bytes, change_json: bytes) -> bytes:
        """A change, with its position as the client's new last event id."""
        ...

    def bookmark(self, position: bytes) -> bytes:
        """Moves the client's last event id forward without an event."""
        ...

    def control(self, event: str, position: str | None, data: Any) -> bytes:
        """A `reset` or `error` event; `position` (if any) becomes the client's last event id."""
        ...
