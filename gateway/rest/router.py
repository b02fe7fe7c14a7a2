"""The routes of one model, with LoopBack 3's paths, request shapes and replies (LOOPBACK3.md §5, §6).

Handlers only parse the request, call the model's reads or writes, and shape the reply; the transaction and
outbox rules live in `gateway.changes.writes`. Bodies are parsed and validated here rather than by FastAPI, so
that errors come out in LoopBack's envelope with LoopBack's messages; the OpenAPI document still describes
them (see `gateway.rest.openapi`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.broker.base import Broker, BrokerError
from gateway.broker.continuity import Position
from gateway.changes.writes import ModelWrites
from gateway.filters import And, Condition, Filter, Op, argument, parse_fields, parse_filter, parse_where
from gateway.models.definition import ModelDef
from gateway.models.validation import InvalidInstance, parse_id
from gateway.ops.metrics import Metrics
from gateway.rest import openapi
from gateway.rest.errors import JSON_TYPE, LoopBackError, not_found
from gateway.rest.include import Inclusion, attach, parse_include, without_include
from gateway.rest.limits import RestLimits, check_body_shape
from gateway.rest.reads import ModelReads
from gateway.security import OPEN, Access
from gateway.singleflight import SingleFlight

log = logging.getLogger("gateway.rest")

AccessCheck = Callable[[Request, ModelDef, str], Awaitable[Access]]
"""Authorises a LoopBack method (`"find"`, `"create"`, ...) for a request: `Security.access`."""

Row = dict[str, Any]
POSITION_HEADER = "X-Change-Stream-Position"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
STREAM_PATH = "/change-stream"
STREAM_METHODS = ("GET", "POST")
"""The change stream's path under a model and its methods (gateway.sse.route serves it in front of the
routes)."""


def json_response(content: Any, *, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), media_type=JSON_TYPE, headers=headers)


async def read_body(request: Request) -> Any:
    """The JSON body; malformed JSON is LoopBack's 400 `SyntaxError`, an empty body is `{}`."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LoopBackError(400, f"Unexpected token in JSON: {exc}", name="SyntaxError") from None
    check_body_shape(body)
    return body


async def read_object(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise LoopBackError(400, "The request body must be a JSON object")
    return body


class ModelApi:
    """Everything the routes of one model need."""

    def __init__(
        self,
        model: ModelDef,
        reads: ModelReads,
        writes: ModelWrites,
        broker: Broker,
        access: AccessCheck | None = None,
        metrics: Metrics | None = None,
        limits: RestLimits | None = None,
    ) -> None:
        self.model = model
        self.reads = reads
        self.writes = writes
        self.broker = broker
        self._access = access
        self._metrics = metrics
        self.limits = limits or RestLimits()
        self.related: Mapping[str, ModelApi] = {}
        self.models: Mapping[str, ModelDef] = {model.name: model}
        self._head = SingleFlight(lambda: broker.head(model.stream))

    def link(self, apis: Mapping[str, ModelApi]) -> None:
        """Give this model's routes the other models' APIs, which `include` and relation routes read."""
        self.related = apis
        self.models = {name: api.model for name, api in apis.items()}

    async def access(self, request: Request, method: str) -> Access:
        """Authorise `method` before anything of the request is parsed (401/403/429 are raised)."""
        return OPEN if self._access is None else await self._access(request, self.model, method)

    async def find_by_id(self, access: Access, id_value: Any, fields: tuple[str, ...] | None) -> Any | None:
        """The row, if it is within the request's scope."""
        if access.scope is None:
            return await self.reads.find_by_id(id_value, fields)
        where = And((Condition(self.model.id_name, Op.EQ, id_value), access.scope))
        rows = await self.reads.find(Filter(where, (), 1, 0, fields))
        return rows[0] if rows else None

    async def exists(self, access: Access, id_value: Any | None) -> bool:
        if id_value is None:
            return False
        if access.scope is None:
            return await self.reads.exists(id_value)
        return await self.reads.count(And((Condition(self.model.id_name, Op.EQ, id_value), access.scope))) > 0

    def query_argument(self, request: Request, name: str) -> Any:
        return argument(request.query_params.multi_items(), name)

    def filter(self, request: Request) -> tuple[Filter, tuple[Inclusion, ...]]:
        """The request's `filter`, and the relations its `include` asks for."""
        raw, include = without_include(self.query_argument(request, "filter"))
        return parse_filter(self.model, raw), parse_include(self.model, include, self.models)

    async def find(self, request: Request, flt: Filter, inclusions: tuple[Inclusion, ...]) -> list[Row]:
        """Rows for an already authorised filter, with the included relations attached."""
        if not inclusions:
            return await self.reads.find(flt)
        rows = await self.reads.find(Filter(flt.where, flt.order, flt.limit, flt.skip, None))
        return await self.included(request, rows, inclusions, flt.fields)

    async def included(
        self,
        request: Request,
        rows: list[Row],
        inclusions: tuple[Inclusion, ...],
        fields: tuple[str, ...] | None,
    ) -> list[Row]:
        """`rows` (read without projection) with `inclusions` attached, then projected onto `fields`."""

        async def find_related(target: ModelDef, flt: Filter) -> list[Row]:
            api = self.related[target.name]
            return await api.reads.find((await api.access(request, "find")).filter(flt))

        await attach(rows, inclusions, find_related, self.models)
        if fields is None:
            return rows
        keep = {*fields, *(inclusion.relation.name for inclusion in inclusions)}
        return [{k: v for k, v in row.items() if k in keep} for row in rows]

    def id_or_none(self, raw: str) -> Any | None:
        return parse_id(self.model, raw)

    async def position_header(self) -> dict[str, str]:
        """The stream position before a read, so `change-stream?lastEventId=<it>` misses nothing after it.
        A read without it would quietly break list-then-watch, so a broker that cannot answer is a 503.
        Concurrent reads share one request for it (`SingleFlight`)."""
        try:
            head = await self._head()
        except BrokerError as exc:
            log.warning("no stream position for a read of %s: %s", self.model.name, exc)
            if self._metrics is not None:
                self._metrics.broker_unavailable("position")
            raise LoopBackError(
                503, "The change stream's position is unavailable; retry", headers={"Retry-After": "2"}
            ) from None
        return {POSITION_HEADER: str(Position(head.epoch, head.last))}


async def create_reply(api: ModelApi, request: Request) -> Response:
    """`POST <plural>`: one object or an array of them. Served ahead of FastAPI by `gateway.rest.creates`;
    the route below is what the OpenAPI document and an app without that shortcut see."""
    access = await api.access(request, "create")
    body = await read_body(request)
    if isinstance(body, list):
        if not all(isinstance(item, dict) for item in body):
            raise LoopBackError(400, "Each element of the request body must be a JSON object")
        api.limits.check_create(body)
        return json_response(await api.writes.create([access.row(item) for item in body]))
    if not isinstance(body, dict):
        raise LoopBackError(400, "The request body must be a JSON object or an array of objects")
    return json_response((await api.writes.create([access.row(body)]))[0])


def model_router(api: ModelApi) -> APIRouter:
    """The APIRouter for one model, to be mounted at `<rest root>/<plural>`."""
    model = api.model
    router = APIRouter(tags=[model.name])
    docs = openapi.RouteDocs(model)

    @router.post(
        "", openapi_extra=docs.body("create"), responses=docs.reply(array_or_one=True), summary="create"
    )
    async def create(request: Request) -> Response:
        return await create_reply(api, request)

    async def upsert(request: Request, replace: bool) -> Response:
        access = await api.access(request, "replaceOrCreate" if replace else "patchOrCreate")
        writes = api.writes.scoped(access.scope)
        body = access.row(await read_object(request))
        raw_id = body.get(model.id_name)
        id_value = None if raw_id is None else parse_id(model, raw_id)
        if raw_id is not None and id_value is None:
            problem = InvalidInstance(model.name)
            problem.add(model.id_name, "type", f"is not a valid {model.id_property.type.value}", raw_id)
            raise problem
        if replace:
            return json_response(await writes.replace_or_create(body, id_value))
        return json_response(await writes.patch_or_create(body, id_value))

    @router.patch("", openapi_extra=docs.body(), responses=docs.reply(), summary="patchOrCreate")
    async def patch_or_create(request: Request) -> Response:
        return await upsert(request, replace=False)

    @router.put("", openapi_extra=docs.body(), responses=docs.reply(), summary="replaceOrCreate")
    async def replace_or_create(request: Request) -> Response:
        return await upsert(request, replace=True)

    @router.post(
        "/replaceOrCreate", openapi_extra=docs.body(), responses=docs.reply(), summary="replaceOrCreate"
    )
    async def replace_or_create_post(request: Request) -> Response:
        return await upsert(request, replace=True)

    @router.post(
        "/upsertWithWhere",
        openapi_extra=docs.body("Changes", where=True),
        responses=docs.reply(),
        summary="upsertWithWhere",
    )
    async def upsert_with_where(request: Request) -> Response:
        access = await api.access(request, "upsertWithWhere")
        where = parse_where(model, api.query_argument(request, "where"))
        if where is None:
            raise LoopBackError(400, "The where argument is required")
        body = access.row(await read_object(request))
        return json_response(await api.writes.scoped(access.scope).upsert_with_where(where, body))

    @router.get("/count", openapi_extra=docs.where(), responses=docs.count(), summary="count")
    async def count(request: Request) -> Response:
        access = await api.access(request, "count")
        where = access.where(parse_where(model, api.query_argument(request, "where")))
        headers = await api.position_header()
        return json_response({"count": await api.reads.count(where)}, headers=headers)

    @router.get("/findOne", openapi_extra=docs.filter(), responses=docs.reply(), summary="findOne")
    async def find_one(request: Request) -> Response:
        access = await api.access(request, "findOne")
        flt, inclusions = api.filter(request)
        flt = access.filter(flt)
        headers = await api.position_header()
        rows = await api.find(request, Filter(flt.where, flt.order, 1, flt.skip, flt.fields), inclusions)
        if not rows:
            raise not_found(model.name, "undefined")
        return json_response(rows[0], headers=headers)

    @router.post(
        "/update", openapi_extra=docs.body("Changes", where=True), responses=docs.count(), summary="updateAll"
    )
    async def update_all(request: Request) -> Response:
        access = await api.access(request, "updateAll")
        raw_where = api.query_argument(request, "where")
        if raw_where is None:
            raise LoopBackError(400, "The where argument is required; use where={} to update every row")
        where = parse_where(model, raw_where)
        body = access.patch(await read_object(request))
        return json_response({"count": await api.writes.scoped(access.scope).update_all(where, body)})

    @router.get("", openapi_extra=docs.filter("Page"), responses=docs.reply(array=True), summary="find")
    async def find(request: Request) -> Response:
        access = await api.access(request, "find")
        flt, inclusions = api.filter(request)
        flt = access.filter(flt)
        beyond = api.limits.beyond_page(flt)
        if beyond is not None and await api.reads.has_row(beyond):
            raise api.limits.too_large()
        flt = api.limits.page(flt)
        headers = await api.position_header()
        rows = await api.find(request, flt, inclusions)
        api.limits.check_page(rows)
        return json_response(rows, headers=headers)

    @router.get("/{id}/exists", responses=docs.exists(), summary="exists")
    async def exists(request: Request, id: str) -> Response:
        access = await api.access(request, "exists")
        return json_response({"exists": await api.exists(access, api.id_or_none(id))})

    @router.head("/{id}", summary="exists (HEAD)")
    async def exists_head(request: Request, id: str) -> Response:
        literal = STREAM_METHODS if f"/{id}" == STREAM_PATH else literal_methods(router, f"/{id}")
        if literal:  # `/count` is not an id: a 405 naming its methods (gateway/rest/head.py answers GETs)
            raise StarletteHTTPException(405, headers={"Allow": ", ".join(literal)})
        access = await api.access(request, "exists")
        if not await api.exists(access, api.id_or_none(id)):
            raise not_found(model.name, id)
        return Response(b"", media_type=JSON_TYPE, headers={"Content-Length": str(len(b'{"exists":true}'))})

    @router.get("/{id}", openapi_extra=docs.filter("Id"), responses=docs.reply(), summary="findById")
    async def find_by_id(request: Request, id: str) -> Response:
        access = await api.access(request, "findById")
        id_value = api.id_or_none(id)
        raw, include = without_include(api.query_argument(request, "filter") or {})
        fields = parse_fields(model, raw.get("fields") if isinstance(raw, Mapping) else None)
        inclusions = parse_include(model, include, api.models)
        read_fields = None if inclusions else fields
        row = None if id_value is None else await api.find_by_id(access, id_value, read_fields)
        if row is None:
            raise not_found(model.name, id)
        if inclusions:
            row = (await api.included(request, [row], inclusions, fields))[0]
        return json_response(row)

    async def replace_by_id(request: Request, id: str) -> Response:
        access = await api.access(request, "replaceById")
        body = access.row(await read_object(request))
        id_value = api.id_or_none(id)
        if id_value is None:
            raise LoopBackError(404, f"Could not replace. Object with id {id} does not exist!")
        return json_response(await api.writes.scoped(access.scope).replace_by_id(id_value, body))

    router.add_api_route(
        "/{id}",
        replace_by_id,
        methods=["PUT"],
        openapi_extra=docs.body("Replace"),
        responses=docs.reply(),
        summary="replaceById",
    )
    router.add_api_route(
        "/{id}/replace",
        replace_by_id,
        methods=["POST"],
        openapi_extra=docs.body("Replace"),
        responses=docs.reply(),
        summary="replaceById",
    )

    @router.patch(
        "/{id}", openapi_extra=docs.body("Changes"), responses=docs.reply(), summary="patchAttributes"
    )
    async def patch_attributes(request: Request, id: str) -> Response:
        access = await api.access(request, "patchAttributes")
        body = access.patch(await read_object(request))
        id_value = api.id_or_none(id)
        if id_value is None:
            raise LoopBackError(404, f"could not find a model with id {id}", code="MODEL_NOT_FOUND")
        return json_response(await api.writes.scoped(access.scope).patch_by_id(id_value, body))

    @router.delete("/{id}", responses=docs.count(), summary="deleteById")
    async def delete_by_id(request: Request, id: str) -> Response:
        access = await api.access(request, "deleteById")
        id_value = api.id_or_none(id)
        writes = api.writes.scoped(access.scope)
        return json_response({"count": 0 if id_value is None else await writes.delete_by_id(id_value)})

    return router


def allowed_methods(routers: tuple[APIRouter, ...], path: str) -> list[str]:
    """The methods `routers` serve at `path` (relative to the prefix they are mounted at). A path that a
    literal route matches is that route's alone (`/count` is not an `{id}`), as the OpenAPI document says."""
    matching = _matching(routers, path)
    literal = [route for route in matching if "{" not in route.path]
    return sorted({method for route in literal or matching for method in route.methods or ()})


def literal_methods(router: APIRouter, path: str) -> list[str]:
    """The methods of the routes without parameters that `path` names (`/count`: GET), else none."""
    literal = [route for route in _matching((router,), path) if "{" not in route.path]
    return sorted({method for route in literal for method in route.methods or ()})


def _matching(routers: tuple[APIRouter, ...], path: str) -> list[APIRoute]:
    return [
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.path_regex.match(path)
    ]


def unknown_route_router(model: ModelDef, served: tuple[APIRouter, ...]) -> APIRouter:
    """Mounted after the model's routers (`served`, the change stream's methods added at its path): a 405
    with `Allow` for a method that no route of an existing path handles (LoopBack answered 404 there;
    README, Compatibility), else LoopBack's 404 for a path under the model that no method handles."""
    router = APIRouter(include_in_schema=False)

    def no_method(request: Request, path: str) -> LoopBackError:
        allowed = list(STREAM_METHODS) if path == STREAM_PATH else allowed_methods(served, path)
        if allowed and request.method not in allowed:
            return LoopBackError(
                405,
                f'Shared class "{model.name}" handles {path or "/"} only with {", ".join(allowed)}',
                headers={"Allow": ", ".join(allowed)},
            )
        return LoopBackError(
            404, f'Shared class "{model.name}" has no method handling {request.method} {path or "/"}'
        )

    async def at_root(request: Request) -> Response:
        raise no_method(request, "")

    async def below(request: Request, rest: str) -> Response:
        raise no_method(request, f"/{rest}")

    router.add_api_route("", at_root, methods=ALL_METHODS)
    router.add_api_route("/{rest:path}", below, methods=ALL_METHODS)
    return router
