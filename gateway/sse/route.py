"""`GET|POST /api/<Plural>/change-stream`, served ahead of FastAPI's router: validate, register, stream.

A change stream is a request that lives for hours, so what it keeps suspended is paid per connection. Going
through FastAPI would keep its request exit stacks and some fifteen frames of exception handling and
routing alive for the whole stream, each also wrapping every body `send`; served here, an idle stream costs
about half the memory and each delivery two coroutine wrappers less (loadtests/RESULTS.md). The middleware
that wraps the whole app (request log, CORS, security headers, body limit) still wraps the stream.

All client errors (bad `options`, a full or draining worker, an unreachable broker, failed authentication)
are answered in LoopBack's envelope before the stream starts; after the `200`, problems are told in-band.
The one exception is a 503 to a request for SSE: that is a `200` with a `retry:` and an immediate end (DESIGN
§4.2a), because EventSource gives up for good on any other status, while it reconnects after an end.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.broker.base import Broker, BrokerError
from gateway.fanout.hub import Hub
from gateway.filters import compile_predicate, parse_fields, parse_where
from gateway.models.definition import ModelDef
from gateway.ops.metrics import Metrics
from gateway.rest.errors import CLIENT_ERRORS, LoopBackError, as_loopback_error, error_response, server_error
from gateway.rest.filter_schema import options_schema
from gateway.rest.openapi import json_parameter
from gateway.security import StreamAccess
from gateway.security.limits import Release
from gateway.sse.endpoint import ChangeStreamResponse, StreamServices
from gateway.sse.frames import Format, reconnect_body
from gateway.sse.negotiation import resume_from, stream_format, stream_options
from gateway.sse.snapshot import Snapshots, wants_snapshot

log = logging.getLogger("gateway.stream")

RETRY_AFTER_SECONDS = "2"
METHODS = ("GET", "POST")
DESCRIPTION = (
    "Server-Sent Events (or NDJSON for `Accept: application/json`) of every change to the model. "
    "Resume with the `Last-Event-ID` header or `lastEventId`; filter with `options` "
    '(`{"where": ..., "fields": ...}`).'
)

SSE_EVENT = {
    "type": "object",
    "description": "One event: `data` (a change object as JSON), `reset`, or an `id`-only bookmark",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string", "enum": ["data", "reset", "snapshot-end"]},
        "data": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

T = TypeVar("T")
Authorise = Callable[[Request, ModelDef], Awaitable[StreamAccess]]


class ChangeStreamRoutes:
    """An ASGI app that serves the change streams of `models` and passes every other request to `app`.

    `refuse()` names why this worker takes no new streams (draining, full), or returns None. `authorise`
    (`Security.stream_access`) authenticates the request, checks the ACLs and takes a stream slot, before
    anything else is parsed.
    """

    def __init__(
        self,
        app: ASGIApp,
        models: tuple[ModelDef, ...],
        *,
        rest_root: str,
        hub: Hub,
        broker: Broker,
        metrics: Metrics,
        retry_ms: int,
        refuse: Callable[[], str | None],
        authorise: Authorise,
        snapshots: Snapshots,
    ) -> None:
        self.app = app
        self._models = {stream_path(rest_root, model): model for model in models}
        self._hub = hub
        self._retry_ms = retry_ms
        self._services = StreamServices(hub, broker, metrics, retry_ms)
        self._refuse = refuse
        self._authorise = authorise
        self._snapshots = snapshots

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """A plain call: what is passed on keeps no frame of this app while it lasts."""
        model = self._models.get(route_path(scope)) if scope["type"] == "http" else None
        if model is None or scope["method"] not in METHODS:
            return self.app(scope, receive, send)
        return self._serve(model, scope, receive, send)

    async def _serve(self, model: ModelDef, scope: Scope, receive: Receive, send: Send) -> None:
        stream = await self._admitted(model, scope, receive, send)
        if stream is None:
            return
        try:
            await stream.response(scope, receive, send)
        finally:
            if stream.release is not None:
                await stream.release()

    async def _admitted(self, model: ModelDef, scope: Scope, receive: Receive, send: Send) -> Admitted | None:
        """The admitted stream, or None once the refusal is answered; in a frame of its own, so that the
        request it parsed (query, headers, body) is not kept for the stream's life."""
        request = Request(scope, receive)
        reconnect_ms = self._retry_ms if stream_format(request) is Format.SSE else None
        return await admit_or_answer(self.admit(request, model), scope, receive, send, reconnect_ms)

    async def admit(self, request: Request, model: ModelDef) -> Admitted:
        """Everything that can refuse a stream, in order; the stream slot taken is given back on failure."""
        reason = self._refuse()  # first: a draining worker must not burn a single-use ticket
        if reason is not None:
            raise LoopBackError(503, reason, headers={"Retry-After": RETRY_AFTER_SECONDS})
        access = await self._authorise(request, model)
        try:
            return Admitted(await self._open(request, model, access), access.release)
        except BaseException:
            if access.release is not None:
                await access.release()
            raise

    async def _open(self, request: Request, model: ModelDef, stream: StreamAccess) -> ChangeStreamResponse:
        options = await stream_options(request)
        # The principal's row scope joins the client's filter: every event, live or replayed, passes it,
        # and since the group key is made from it, principals of different scopes never share frames.
        where = stream.access.where(parse_where(model, options.get("where")))
        fields = parse_fields(model, options.get("fields"))
        fmt = stream_format(request)
        resume = resume_from(request)
        snapshot = resume is None and wants_snapshot(request.query_params, options)
        key = (fmt, repr(where), repr(fields))
        try:
            subscription = await self._hub.subscribe(
                model,
                key,
                lambda: None if where is None else compile_predicate(model, where),
                fields,
                replaying=resume is not None or snapshot,
                expires_at=stream.access.expires_at,
            )
        except BrokerError as exc:
            raise LoopBackError(
                503, f"the change stream is unavailable: {exc}", headers={"Retry-After": RETRY_AFTER_SECONDS}
            ) from None
        prelude = b""
        if snapshot:  # read after registering: the position is taken before the query
            resume = subscription.start_position
            try:
                prelude = await self._snapshots.frames(model, where, fields, fmt, resume)
            except BaseException:
                await self._hub.unsubscribe(subscription)
                raise
        return ChangeStreamResponse(
            subscription,
            self._services,
            fmt=fmt,
            resume=resume,
            prelude=prelude,
        )


class Admitted(NamedTuple):
    """A stream that passed every check and is registered; run `response`, or `abandon` it."""

    response: ChangeStreamResponse
    release: Release | None

    async def abandon(self) -> None:
        await self.response.abandon()
        if self.release is not None:
            await self.release()


async def admit_or_answer(
    admission: Awaitable[T], scope: Scope, receive: Receive, send: Send, reconnect_ms: int | None
) -> T | None:
    """The admitted stream, or None once the refusal is answered: a client error in LoopBack's envelope, or
    a logged 500. With `reconnect_ms` (an SSE request) a 503 is a `200` whose body is only a `retry:` and
    the reason, so that EventSource reconnects instead of giving up."""
    try:
        return await admission
    except CLIENT_ERRORS as exc:
        error = as_loopback_error(exc)
        if error.status == 503 and reconnect_ms is not None:
            await reconnect_response(reconnect_ms, error.message)(scope, receive, send)
        else:
            await error_response(error)(scope, receive, send)
    except Exception:
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        await server_error()(scope, receive, send)
    return None


def reconnect_response(retry_ms: int, reason: str) -> Response:
    body = reconnect_body(retry_ms, reason)
    return Response(body, headers={"Content-Type": Format.SSE.value, "Cache-Control": "no-cache"})


def route_path(scope: Scope) -> str:
    """The path the app's routes see: without the `root_path` it is mounted at, as Starlette's router
    strips it, so a gateway mounted under a prefix serves its streams there too."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] == "/":
        return path[len(root_path) :]
    return path


def stream_path(rest_root: str, model: ModelDef) -> str:
    return f"{rest_root}/{model.plural}/change-stream"


def openapi_paths(rest_root: str, models: tuple[ModelDef, ...]) -> dict[str, Any]:
    """The change-stream routes' OpenAPI entries (they are not FastAPI routes, so FastAPI cannot list
    them)."""
    parameters = [
        {
            "name": "_format",
            "in": "query",
            "required": False,
            "description": "`event-stream` for SSE whatever the Accept header says (other values are "
            "ignored, as LoopBack does)",
            "schema": {"type": "string"},
        },
        {
            "name": "lastEventId",
            "in": "query",
            "required": False,
            "description": "Resume after this event id (the `Last-Event-ID` header does the same)",
            "schema": {"type": "string"},
        },
        {
            "name": "snapshot",
            "in": "query",
            "required": False,
            "description": "`true` (or `1`, any case): the matching rows as `create` events, then "
            "`event: snapshot-end`, then live; any other value is no snapshot",
            "schema": {"type": "string"},
        },
    ]
    responses = {
        "200": {
            "description": "The change stream; when this worker takes no new stream (draining, full, broker "
            "down), an SSE request gets only a `retry:` and the end, so that EventSource reconnects",
            "content": {"text/event-stream": {"schema": SSE_EVENT}, "application/x-ndjson": {}},
        },
        "400": {"description": "Bad `options`"},
        "401": {"description": "Authentication required or failed"},
        "503": {
            "description": "Not SSE, and this worker takes no new stream now (draining, full, broker down)"
        },
    }
    paths: dict[str, Any] = {}
    for model in models:
        paths[stream_path(rest_root, model)] = {
            method.lower(): {
                "tags": [model.name],
                "summary": "createChangeStream",
                "description": DESCRIPTION,
                "operationId": f"{model.name}_change_stream_{method.lower()}",
                "parameters": [
                    json_parameter(
                        "options",
                        'JSON such as {"where": {"done": false}, "fields": ["id", "title"]}',
                        options_schema(model),
                        required=False,
                    ),
                    *parameters,
                ],
                "responses": responses,
            }
            for method in METHODS
        }
    return paths
