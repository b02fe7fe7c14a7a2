"""`GET|POST /api/<Plural>/change-stream`: validate everything, register, then stream.

All client errors (bad `options`, a full or draining worker, an unreachable broker) are answered in
LoopBack's envelope before the stream starts; after the `200`, problems are told in-band.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response

from gateway.broker.base import Broker, BrokerError
from gateway.fanout.hub import Hub
from gateway.filters import compile_predicate, parse_fields, parse_where
from gateway.models.definition import ModelDef
from gateway.ops.metrics import Metrics
from gateway.rest.errors import LoopBackError
from gateway.security import OPEN, StreamAccess
from gateway.sse.endpoint import ChangeStreamResponse
from gateway.sse.negotiation import resume_from, stream_format, stream_options

RETRY_AFTER_SECONDS = "2"


def change_stream_router(
    model: ModelDef,
    *,
    hub: Hub,
    broker: Broker,
    metrics: Metrics,
    retry_ms: int,
    refuse: Callable[[], str | None],
    authorise: Callable[[Request, ModelDef], Awaitable[StreamAccess]] | None = None,
) -> APIRouter:
    """`refuse()` names why this worker takes no new streams (draining, full), or returns None.
    `authorise` (`Security.stream_access`) authenticates the request, checks the ACLs and takes a stream
    slot, before anything else is parsed."""
    router = APIRouter(tags=[model.name])

    async def change_stream(request: Request) -> Response:
        reason = refuse()  # first: a draining worker must not burn a single-use ticket
        if reason is not None:
            raise LoopBackError(503, reason, headers={"Retry-After": RETRY_AFTER_SECONDS})
        stream = StreamAccess(OPEN, None) if authorise is None else await authorise(request, model)
        try:
            response = await _open(request, stream)
        except BaseException:
            if stream.release is not None:
                await stream.release()
            raise
        return stream.keep(response)

    async def _open(request: Request, stream: StreamAccess) -> Response:
        options = await stream_options(request)
        # The principal's row scope joins the client's filter: every event, live or replayed, passes it,
        # and since the group key is made from it, principals of different scopes never share frames.
        where = stream.access.where(parse_where(model, options.get("where")))
        fields = parse_fields(model, options.get("fields"))
        fmt = stream_format(request)
        resume = resume_from(request)
        key = (fmt, repr(where), repr(fields))
        try:
            subscription = await hub.subscribe(
                model,
                key,
                lambda: None if where is None else compile_predicate(model, where),
                fields,
                replaying=resume is not None,
                expires_at=stream.access.expires_at,
            )
        except BrokerError as exc:
            raise LoopBackError(
                503, f"the change stream is unavailable: {exc}", headers={"Retry-After": RETRY_AFTER_SECONDS}
            ) from None
        return ChangeStreamResponse(
            subscription, hub=hub, broker=broker, metrics=metrics, fmt=fmt, resume=resume, retry_ms=retry_ms
        )

    description = (
        "Server-Sent Events (or NDJSON for `Accept: application/json`) of every change to the model. "
        "Resume with the `Last-Event-ID` header or `lastEventId`; filter with `options` "
        '(`{"where": ..., "fields": ...}`).'
    )
    for method in ("GET", "POST"):
        router.add_api_route(
            "/change-stream",
            change_stream,
            methods=[method],
            name=f"change_stream_{method.lower()}",
            summary="createChangeStream",
            description=description,
            response_class=Response,
        )
    return router
