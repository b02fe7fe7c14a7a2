"""An incremental Server-Sent Events parser that follows the WHATWG specification exactly.

Exactness matters here: it is how tests (and the remote client) see what a browser's `EventSource` sees,
including that an `id:`-only frame moves the last event id without dispatching an event.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
COMMENTS_KEPT = 16


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    last_event_id: str


class SSEParser:
    """Feed bytes as they arrive; get back the events they complete."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments: deque[str] = deque(maxlen=COMMENTS_KEPT)  # a follower lives for days: keep the last
        self._skip_lf = False
        self._first = True

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        buffer = self._pending + chunk
        if self._skip_lf and buffer[:1] == b"\n":
            buffer = buffer[1:]
        if not buffer:
            return events
        self._skip_lf = buffer.endswith(b"\r")  # a CR now may be the first half of a CRLF in the next chunk
        lines = _LINE_END.split(buffer)
        self._pending = lines.pop()
        for line in lines:
            self._line(line.decode("utf-8", errors="replace"), events)
        return events

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        self.last_event_id = self._id_buffer
        if not self._data:
            self._event = ""
            return
        events.append(ServerSentEvent(self._event or "message", "\n".join(self._data), self.last_event_id))
        self._data = []
        self._event = ""
