"""The SSE parser against the WHATWG rules, fed whole and byte by byte (every chunk boundary)."""

from __future__ import annotations

import pytest

from gateway.client.sse import ServerSentEvent, SSEParser

CASES: list[tuple[bytes, list[ServerSentEvent], str]] = [
    (b"data: a\n\n", [ServerSentEvent("message", "a", "")], ""),
    (b"event: data\ndata: {}\nid: 7\n\n", [ServerSentEvent("data", "{}", "7")], "7"),
    (b"data: a\ndata: b\n\n", [ServerSentEvent("message", "a\nb", "")], ""),
    (b"id: 5\n\n", [], "5"),  # a bookmark: moves the last event id, fires nothing
    (b"id: 5\n\nid\n\n", [], ""),  # an empty id resets it
    (b"id: a\x00b\n\n", [], ""),  # an id with NUL is ignored
    (b"data:no-space\r\n\r\n", [ServerSentEvent("message", "no-space", "")], ""),
    (
        b"data: cr\r\rdata: x\r\n\r\n",
        [ServerSentEvent("message", "cr", ""), ServerSentEvent("message", "x", "")],
        "",
    ),
    (b"\xef\xbb\xbfdata: bom\n\n", [ServerSentEvent("message", "bom", "")], ""),
    (b": comment\nevent: x\n\n", [], ""),  # an event with no data dispatches nothing
    (b"data: unterminated", [], ""),
    (b"data\n\n", [ServerSentEvent("message", "", "")], ""),
]


@pytest.mark.parametrize(("stream", "events", "last_id"), CASES)
def test_whole(stream: bytes, events: list[ServerSentEvent], last_id: str) -> None:
    parser = SSEParser()
    assert parser.feed(stream) == events
    assert parser.last_event_id == last_id


@pytest.mark.parametrize(("stream", "events", "last_id"), CASES)
def test_byte_by_byte(stream: bytes, events: list[ServerSentEvent], last_id: str) -> None:
    parser = SSEParser()
    parsed = [event for i in range(len(stream)) for event in parser.feed(stream[i : i + 1])]
    assert parsed == events
    assert parser.last_event_id == last_id


def test_retry_and_comments() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 2500\n:ok\n\nretry: soon\n: ping\n\n")
    assert parser.retry == 2500
    assert list(parser.comments) == ["ok", " ping"]
