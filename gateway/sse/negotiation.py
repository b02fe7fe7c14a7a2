"""What a change-stream request asks for: its format, its `options`, and where it resumes.

LoopBack's rules (LOOPBACK3.md §2, §3): SSE when `_format=event-stream` or the `Accept` header admits
`text/event-stream` (so curl's `*/*` gets SSE); `options` from the POST body's `options`, the query string
(JSON or bracket form) or a request header named `options`. Unlike LoopBack, a body of the wrong shape or
options that are not an object are a 400, never silently ignored.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from gateway.filters import FilterError, argument
from gateway.sse.frames import Format

NOT_AN_OBJECT = "Value is not an object."


def stream_format(request: Request) -> Format:
    if request.query_params.get("_format") == "event-stream":
        return Format.SSE
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return Format.SSE
    for media_range in accept.split(","):
        media, _, params = media_range.strip().partition(";")
        if media.strip().lower() in ("text/event-stream", "text/*", "*/*") and not _refused(params):
            return Format.SSE
    return Format.NDJSON


def _refused(params: str) -> bool:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value) <= 0
            except ValueError:
                return False
    return False


async def stream_options(request: Request) -> dict[str, Any]:
    """The `options` object, from the body, the query string or a header, in LoopBack's order."""
    if request.method == "POST":
        raw = await request.body()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise FilterError("The request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise FilterError('The request body must be an object like {"options": {...}}')
            if "options" in body:
                return _as_object(body["options"])
    query = argument(request.query_params.multi_items(), "options")
    if query is not None:
        return _as_object(query)
    header = request.headers.get("options")
    if header:
        return _as_object(header)
    return {}


def _as_object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise FilterError(NOT_AN_OBJECT) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FilterError(NOT_AN_OBJECT)
    return value


def resume_from(request: Request) -> str | None:
    """`Last-Event-ID` (what browsers send), else the `lastEventId` query parameter."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        return header.strip()
    query = request.query_params.get("lastEventId")
    return query.strip() if query and query.strip() else None
