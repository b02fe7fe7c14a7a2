"""`/healthz` (the process answers), `/readyz` (it can serve: database and broker reachable, not draining,
not full) and `/metrics` (Prometheus text format).

Liveness stays trivial on purpose: a worker whose database or broker is down is alive and recovers by
itself, and restarting it would only drop its streams. Readiness is what takes a worker out of the load
balancer: while it drains, while it holds its `GATEWAY_MAX_CONNECTIONS` streams, or while a dependency is
unreachable. Its body says which, and how many streams the answering worker holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.ops.metrics import Metrics

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT = 2.0


def health_router(
    checks: dict[str, Check],
    metrics: Metrics,
    not_ready: Callable[[], str | None],
    streams: Callable[[], tuple[int, int]] | None = None,
) -> APIRouter:
    """`checks` raise when a dependency is unreachable; `not_ready` names a local reason (draining, full);
    `streams` gives this worker's (open, maximum) stream counts for the body."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @router.get("/readyz")
    async def readyz() -> Response:
        problems: dict[str, str] = {}
        reason = not_ready()
        if reason is not None:
            problems["worker"] = reason
        for name, check in checks.items():
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await check()
            except Exception as exc:  # any failure of a dependency means "not ready", with its reason
                problems[name] = f"{type(exc).__name__}: {exc}"[:200]
        status = 503 if problems else 200
        body: dict[str, object] = {"status": "unavailable" if problems else "ready", "problems": problems}
        if streams is not None:
            open_streams, max_streams = streams()
            body["streams"] = {"open": open_streams, "max": max_streams}
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
