"""`create_app(settings)`: builds every part of a gateway and wires them together.

Nothing is created at import time. The parts are constructed here, started in the lifespan, and kept in one
typed container (`Gateway`) rather than an untyped `app.state` bag.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.broker.base import Broker
from gateway.broker.factory import PoolLimits, broker_from_url
from gateway.changes.outbox import outbox_table
from gateway.changes.relay import Relay, RelaySettings
from gateway.changes.writes import ModelWrites
from gateway.config import Settings, load_settings
from gateway.database import create_engine, create_tables, ping
from gateway.fanout.hub import Hub, HubSettings
from gateway.models.definition import Registry
from gateway.models.loader import load_registry
from gateway.models.tables import ModelTables, build_tables
from gateway.ops import httpguard
from gateway.ops.drain import Drain
from gateway.ops.health import health_router
from gateway.ops.metrics import Metrics, PrometheusMetrics
from gateway.ops.requestlog import RequestLogMiddleware
from gateway.rest import errors
from gateway.rest.creates import ModelCreates
from gateway.rest.errors import LoopBackError
from gateway.rest.head import HeadAsGet
from gateway.rest.limits import RestLimits
from gateway.rest.openapi import complete_error_responses, model_schemas
from gateway.rest.plurals import PluralCaseMiddleware
from gateway.rest.reads import ModelReads
from gateway.rest.relation_routes import relation_router
from gateway.rest.router import ALL_METHODS, STREAM_PATH, ModelApi, model_router, unknown_route_router
from gateway.security import Security, build_security
from gateway.security.setup import install_security, security_middleware
from gateway.sse.endpoint import CutOffLogFilter
from gateway.sse.multiplex import MultiplexedStreams
from gateway.sse.route import ChangeStreamRoutes, openapi_paths, route_path
from gateway.sse.snapshot import Snapshots
from gateway.web.routes import web_router

log = logging.getLogger("gateway")


@dataclass
class Gateway:
    """The parts of one running gateway."""

    settings: Settings
    registry: Registry
    tables: ModelTables
    outbox: Table
    engine: AsyncEngine
    broker: Broker
    relay: Relay
    metrics: Metrics
    apis: dict[str, ModelApi]
    hub: Hub
    drain: Drain
    security: Security

    async def start(self) -> None:
        if self.settings.create_tables:
            await create_tables(self.engine, self.tables.metadata)
        self.security.start()
        self.relay.start()
        self.hub.start()
        self.drain.install()

    async def aclose(self) -> None:
        await self.drain.aclose()
        await self.hub.aclose()
        await self.relay.aclose()
        await self.security.aclose()
        await self.broker.aclose()
        await self.engine.dispose()

    def refuse_streams(self) -> str | None:
        """Why this worker takes no new stream right now, if it does not."""
        if self.drain.draining:
            return "this worker is shutting down; reconnect"
        if self.hub.count + httpguard.CAPACITY.incomplete >= self.settings.max_connections:
            return f"this worker holds its maximum of {self.settings.max_connections} streams; reconnect"
        return None


def build_gateway(settings: Settings) -> Gateway:
    """Construct (but do not start) every part from the settings."""
    registry = load_registry(settings.models, settings.models_config)
    for warning in registry.warnings:
        log.warning("%s", warning)
    log.info("serving models: %s", ", ".join(f"{m.name} at /{m.plural}" for m in registry.models))
    tables = build_tables(registry)
    outbox = outbox_table(tables.metadata)
    engine = create_engine(settings.database_url)
    broker = broker_from_url(
        settings.broker_url,
        prefix=settings.redis_prefix,
        stream_maxlen=settings.stream_maxlen,
        pool=PoolLimits(settings.redis_max_connections, settings.redis_pool_timeout),
    )
    metrics = PrometheusMetrics()
    relay = Relay(
        engine=engine,
        outbox=outbox,
        broker=broker,
        streams=[model.stream for model in registry.models],
        settings=RelaySettings(
            batch=settings.relay_batch,
            poll_interval=settings.relay_poll_interval,
            lease_ttl=settings.lease_ttl,
            outbox_retention=settings.outbox_retention,
            stream_max_age=settings.stream_max_age,
        ),
        metrics=metrics,
    )
    security = build_security(settings, registry, broker)
    apis = {}
    for model in registry.models:
        table = tables.table(model)
        apis[model.name] = ModelApi(
            model,
            ModelReads(model, table, engine),
            ModelWrites(model, table, outbox, engine, relay.committed),
            broker,
            security.access,
            metrics,
            RestLimits(settings.max_page_size, settings.max_create_rows),
        )
    for api in apis.values():
        api.link(apis)
    hub = Hub(
        broker,
        HubSettings(
            max_events=settings.subscriber_max_events,
            max_bytes=settings.subscriber_max_bytes,
            heartbeat=settings.heartbeat,
            bookmark_interval=settings.bookmark_interval,
            write_timeout=settings.write_timeout,
        ),
        metrics,
    )
    drain = Drain(hub, metrics, settings.drain_seconds)
    return Gateway(
        settings, registry, tables, outbox, engine, broker, relay, metrics, apis, hub, drain, security
    )


def _asgi3(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Mark a plain method that returns an awaitable as a coroutine function, where uvicorn's ASGI-version
    test looks: `asyncio.iscoroutinefunction`'s marker (Python 3.11-3.13, as `unittest.mock` sets it) and
    `inspect.markcoroutinefunction` (3.12 on; uvicorn asks `inspect` from 3.14)."""
    setattr(method, "_is_coroutine", getattr(asyncio.coroutines, "_is_coroutine"))  # noqa: B009, B010
    mark = getattr(inspect, "markcoroutinefunction", None)
    return mark(method) if mark is not None else method


class GatewayApp(FastAPI):
    """The ASGI application, carrying its typed parts."""

    gateway: Gateway

    @_asgi3
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        """Starlette's `__call__` as a plain call that returns the middleware stack's awaitable, when FastAPI
        would only pass the request on (HTTP, its telemetry off): an open stream then keeps no FastAPI and
        Starlette frames suspended for its whole life (0.7 KB each, loadtests/RESULTS.md). Anything else
        takes FastAPI's own `__call__`. Marked as a coroutine function (`_asgi3`), so that servers that
        guess the ASGI version from it, as uvicorn does, still see ASGI 3."""
        if scope["type"] != "http" or self._native_telemetry.enabled():
            return super().__call__(scope, receive, send)
        if self.root_path:
            scope["root_path"] = self.root_path
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        return self.middleware_stack(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        """From the outside in: the request log (outside the error handlers, so a 500 is logged with its
        id), plural spelling, the security middleware, the change streams, the creates, HEAD as GET, then
        FastAPI's own stack."""
        gateway = self.gateway
        settings = gateway.settings
        stream_paths = {f"{settings.rest_root}/{m.plural}{STREAM_PATH}" for m in gateway.registry.models}
        creates = ModelCreates(
            HeadAsGet(
                super().build_middleware_stack(),
                streams=stream_paths | {f"{settings.rest_root}{STREAM_PATH}"},
                route_path=route_path,
            ),
            gateway.apis.values(),
            rest_root=settings.rest_root,
            route_path=route_path,
        )
        streams = ChangeStreamRoutes(
            creates,
            gateway.registry.models,
            rest_root=settings.rest_root,
            hub=gateway.hub,
            broker=gateway.broker,
            metrics=gateway.metrics,
            retry_ms=settings.retry,
            refuse=gateway.refuse_streams,
            authorise=gateway.security.stream_access,
            snapshots=Snapshots(
                {name: api.reads for name, api in gateway.apis.items()}, settings.snapshot_max_rows
            ),
        )
        multiplexed = MultiplexedStreams(
            streams,
            gateway.registry.models,
            rest_root=settings.rest_root,
            retry_ms=settings.retry,
            max_bytes=settings.subscriber_max_bytes,
        )
        plurals = PluralCaseMiddleware(
            security_middleware(multiplexed, gateway.security),
            [model.plural for model in gateway.registry.models],
            rest_root=settings.rest_root,
        )
        return RequestLogMiddleware(
            plurals,
            draining=lambda: gateway.drain.draining,
            metrics=gateway.metrics,
        )


def create_app(settings: Settings | None = None) -> GatewayApp:
    """The ASGI application for `settings` (read from the environment when omitted)."""
    settings = settings or load_settings()
    gateway = build_gateway(settings)
    httpguard.CAPACITY.streams = lambda: gateway.hub.count  # streams and slow requests share the limit

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    app = GatewayApp(title="Change-stream gateway", lifespan=lifespan)
    app.gateway = gateway
    _quiet_cut_offs()
    for exc_class, handler in errors.HANDLERS.items():
        app.exception_handler(exc_class)(handler)

    app.include_router(
        health_router(
            {"database": lambda: ping(gateway.engine), "broker": gateway.broker.ping},
            gateway.metrics,
            gateway.refuse_streams,
            lambda: (gateway.hub.count, settings.max_connections),
        )
    )
    root = settings.rest_root
    served: dict[str, tuple[APIRouter, ...]] = {}
    for model in gateway.registry.models:
        served[model.name] = (
            model_router(gateway.apis[model.name]),
            relation_router(gateway.apis[model.name]),
        )
        for router in served[model.name]:
            app.include_router(router, prefix=f"{root}/{model.plural}")
    for model in gateway.registry.models:
        app.include_router(unknown_route_router(model, served[model.name]), prefix=f"{root}/{model.plural}")
    install_security(app, gateway.security)
    app.include_router(web_router(gateway.registry, rest_root=root, page=settings.page))
    app.include_router(_unknown_model_router(), prefix=root)
    _install_openapi(app, gateway.registry, root, settings.max_page_size)
    return app


def _unknown_model_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def no_model(request: Request, rest: str) -> Response:
        raise LoopBackError(404, f"There is no method to handle {request.method} /{rest}")

    router.add_api_route("/{rest:path}", no_model, methods=ALL_METHODS)
    return router


def _quiet_cut_offs() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, CutOffLogFilter) for f in server_log.filters):
        server_log.addFilter(CutOffLogFilter())


def _install_openapi(app: FastAPI, registry: Registry, rest_root: str, max_page_size: int) -> None:
    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version="1", routes=app.routes)
            schema.setdefault("paths", {}).update(openapi_paths(rest_root, registry.models))
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                model_schemas(registry.models, max_page_size)
            )
            complete_error_responses(schema, rest_root)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
