"""Relation routes as LoopBack 3's REST exposes them: `/P/{id}/<relation>...`, with LB3's replies and errors.

Every write here is a write of the related model through its own `ModelWrites` (its transaction, its outbox,
its change stream), so a book created through `POST /Authors/1/books` is the same change on the Book
stream as one created through `POST /Books`. Reads go through the related model's API too: its ACLs,
`$owner` scope and hidden properties apply. The parent row is read with the parent's `findById` access.

Replies recorded from LoopBack 3.28: a missing parent is 404 `could not find a model with id <id>`; a
related row that is not the parent's is 404 `No instance with id <fk> found for <Target>`; deletes are 204
with no body; a belongsTo whose key is unset is `{}`, one whose key names no row `null`; a missing hasOne
is 404 `No "<Target>" instance(s) found`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.filters import And, Condition, Filter, Op, Where, parse_filter, parse_where
from gateway.models.definition import ModelDef, RelationDef, RelationKind
from gateway.rest.errors import LoopBackError
from gateway.rest.include import parse_include, without_include
from gateway.rest.router import ModelApi, Row, json_response, read_object


def relation_router(api: ModelApi) -> APIRouter:
    """The routes of every relation of `api`'s model; mounted beside its model router."""
    router = APIRouter(tags=[api.model.name])
    for relation in api.model.relations:
        _RelationRoutes(api, relation).add_to(router)
    return router


def no_content() -> Response:
    return Response(status_code=204)


class _RelationRoutes:
    def __init__(self, api: ModelApi, relation: RelationDef) -> None:
        self.api = api
        self.relation = relation
        self.path = f"/{{id}}/{relation.name}"

    @property
    def target(self) -> ModelApi:
        return self.api.related[self.relation.target]

    def add_to(self, router: APIRouter) -> None:
        kind, path = self.relation.kind, self.path
        summary = f"__{{}}__{self.relation.name}".format
        if kind.embeds:
            router.add_api_route(path, self.get_embedded, methods=["GET"], summary=summary("get"))
            return
        if kind in (RelationKind.BELONGS_TO, RelationKind.HAS_ONE):
            router.add_api_route(path, self.get_one, methods=["GET"], summary=summary("get"))
        if kind is RelationKind.HAS_ONE:
            router.add_api_route(path, self.create, methods=["POST"], summary=summary("create"))
            router.add_api_route(path, self.update_one, methods=["PUT"], summary=summary("update"))
            router.add_api_route(path, self.delete_all, methods=["DELETE"], summary=summary("destroy"))
        if not kind.to_many:
            return
        router.add_api_route(path, self.find, methods=["GET"], summary=summary("get"))
        router.add_api_route(f"{path}/count", self.count, methods=["GET"], summary=summary("count"))
        if kind is RelationKind.HAS_MANY_THROUGH:
            router.add_api_route(f"{path}/rel/{{fk}}", self.link, methods=["PUT"], summary=summary("link"))
            router.add_api_route(
                f"{path}/rel/{{fk}}", self.unlink, methods=["DELETE"], summary=summary("unlink")
            )
        if kind in (RelationKind.HAS_MANY, RelationKind.HAS_MANY_THROUGH):
            router.add_api_route(path, self.create, methods=["POST"], summary=summary("create"))
            router.add_api_route(path, self.delete_all, methods=["DELETE"], summary=summary("delete"))
            router.add_api_route(
                f"{path}/{{fk}}", self.update_by_id, methods=["PUT"], summary=summary("updateById")
            )
            router.add_api_route(
                f"{path}/{{fk}}", self.delete_by_id, methods=["DELETE"], summary=summary("destroyById")
            )
        router.add_api_route(f"{path}/{{fk}}", self.find_by_id, methods=["GET"], summary=summary("findById"))

    # -- the related rows of one parent --

    async def parent(self, request: Request, id: str) -> Row:
        access = await self.api.access(request, "findById")
        id_value = self.api.id_or_none(id)
        row: Row | None = None if id_value is None else await self.api.find_by_id(access, id_value, None)
        if row is None:
            raise LoopBackError(404, f"could not find a model with id {id}", code="MODEL_NOT_FOUND")
        return row

    async def related_where(self, request: Request, parent: Row) -> Where | None:
        """The target rows of `parent`; None when it has none (no query needed)."""
        relation, target = self.relation, self.target.model
        value = parent.get(relation.key_from)
        if relation.kind is RelationKind.HAS_MANY_THROUGH:
            return _inq(target, target.id_name, await self.linked_ids(request, parent))
        if relation.kind is RelationKind.REFERENCES_MANY:
            return _inq(target, relation.key_to, value if isinstance(value, list) else [])
        return None if value is None else parse_where(target, {relation.key_to: value})

    async def linked_ids(self, request: Request, parent: Row) -> list[Any]:
        """The target ids `parent` links to through the through model, in link order."""
        key = self.relation.key_through
        return [link[key] for link in await self.through_rows(request, parent) if key in link]

    async def through_rows(self, request: Request, parent: Row, fk: Any = None) -> list[Row]:
        relation = self.relation
        assert relation.through is not None
        assert relation.key_through is not None
        through = self.api.related[relation.through]
        where: dict[str, Any] = {relation.key_to: parent[relation.key_from]}
        if fk is not None:
            where[relation.key_through] = fk
        access = await through.access(request, "find")
        return await through.reads.find(access.filter(Filter(parse_where(through.model, where))))

    async def one_related(self, request: Request, id: str, fk: str) -> tuple[Row, Row]:
        """(parent, the related row `fk`), or LB3's 404 when `fk` is not one of the parent's."""
        parent = await self.parent(request, id)
        where = await self.related_where(request, parent)
        fk_value = self.target.id_or_none(fk)
        if where is not None and fk_value is not None:
            access = await self.target.access(request, "findById")
            condition = And((Condition(self.target.model.id_name, Op.EQ, fk_value), where))
            rows = await self.target.reads.find(access.filter(Filter(condition, (), 1)))
            if rows:
                return parent, rows[0]
        raise LoopBackError(404, f"No instance with id {fk} found for {self.target.model.name}")

    def owned(self, parent: Row, body: dict[str, Any]) -> dict[str, Any]:
        """A body for a new related row: its key set to the parent's, whatever the client sent."""
        relation = self.relation
        if relation.kind in (RelationKind.HAS_MANY, RelationKind.HAS_ONE):
            return {**body, relation.key_to: parent[relation.key_from]}
        return body

    # -- handlers --

    async def find(self, request: Request, id: str) -> Response:
        parent = await self.parent(request, id)
        target = self.target
        raw, include = without_include(target.query_argument(request, "filter"))
        flt = parse_filter(target.model, raw)
        inclusions = parse_include(target.model, include, target.models)
        where = await self.related_where(request, parent)
        if where is None:
            return json_response([])
        access = await target.access(request, "find")
        scoped = Filter(_both(where, flt.where), flt.order, flt.limit, flt.skip, flt.fields)
        rows = await target.find(request, access.filter(scoped), inclusions)
        if self.relation.kind is RelationKind.HAS_MANY_THROUGH and not flt.order:
            # LB3 answers in link order here (and in id order for the same relation in `include`)
            position = {key: i for i, key in enumerate(await self.linked_ids(request, parent))}
            rows.sort(key=lambda row: position.get(row.get(target.model.id_name), len(position)))
        return json_response(rows)

    async def count(self, request: Request, id: str) -> Response:
        parent = await self.parent(request, id)
        target = self.target
        where = await self.related_where(request, parent)
        if where is None:
            return json_response({"count": 0})
        access = await target.access(request, "count")
        asked = parse_where(target.model, target.query_argument(request, "where"))
        return json_response({"count": await target.reads.count(access.where(_both(where, asked)))})

    async def find_by_id(self, request: Request, id: str, fk: str) -> Response:
        return json_response((await self.one_related(request, id, fk))[1])

    async def related_rows(self, request: Request, parent: Row, limit: int | None = None) -> list[Row]:
        """The related rows of `parent` that the request may read (the target's `find` access)."""
        where = await self.related_where(request, parent)
        if where is None:
            return []
        access = await self.target.access(request, "find")
        return await self.target.reads.find(access.filter(Filter(where, (), limit)))

    async def get_embedded(self, request: Request, id: str) -> Response:
        """The embedded value (`[]` for an unset embedsMany); LB3 answers 204 for an unset embedsOne."""
        value = (await self.parent(request, id)).get(self.relation.key_from)
        if value is None and self.relation.kind is RelationKind.EMBEDS_ONE:
            return no_content()
        return json_response([] if value is None else value)

    async def get_one(self, request: Request, id: str) -> Response:
        parent = await self.parent(request, id)
        rows = await self.related_rows(request, parent, limit=1)
        if rows:
            return json_response(rows[0])
        if self.relation.kind is RelationKind.BELONGS_TO:  # LB3: {} when the key is unset, null when dangling
            return json_response({} if parent.get(self.relation.key_from) is None else None)
        raise LoopBackError(404, f'No "{self.target.model.name}" instance(s) found', code="MODEL_NOT_FOUND")

    async def create(self, request: Request, id: str) -> Response:
        parent = await self.parent(request, id)
        target = self.target
        body = await read_object(request)
        if self.relation.kind is RelationKind.HAS_ONE and await self.related_rows(request, parent, limit=1):
            raise LoopBackError(
                409, f"HasOne relation cannot create more than one instance of {target.model.name}"
            )
        access = await target.access(request, "create")
        row = (await target.writes.create([access.row(self.owned(parent, body))]))[0]
        if self.relation.kind is RelationKind.HAS_MANY_THROUGH:
            await self.add_link(request, parent, row[target.model.id_name])
        return json_response(row)

    async def update_by_id(self, request: Request, id: str, fk: str) -> Response:
        parent, row = await self.one_related(request, id, fk)
        return await self.patch(request, parent, row)

    async def update_one(self, request: Request, id: str) -> Response:
        parent = await self.parent(request, id)
        rows = await self.related_rows(request, parent, limit=1)
        if not rows:
            raise LoopBackError(
                404, f'No "{self.target.model.name}" instance(s) found', code="MODEL_NOT_FOUND"
            )
        return await self.patch(request, parent, rows[0])

    async def patch(self, request: Request, parent: Row, row: Row) -> Response:
        target = self.target
        access = await target.access(request, "patchAttributes")
        sent = await read_object(request)
        sent.pop(target.model.id_name, None)
        body = access.patch(self.owned(parent, sent))
        writes = target.writes.scoped(access.scope)
        return json_response(await writes.patch_by_id(row[target.model.id_name], body))

    async def delete_by_id(self, request: Request, id: str, fk: str) -> Response:
        parent, row = await self.one_related(request, id, fk)
        await self.delete_rows(request, parent, [row])
        return no_content()

    async def delete_all(self, request: Request, id: str) -> Response:
        parent = await self.parent(request, id)
        await self.delete_rows(request, parent, await self.related_rows(request, parent))
        return no_content()

    async def delete_rows(self, request: Request, parent: Row, rows: list[Row]) -> None:
        """Each row deleted in its own write (one `remove` change each); through a model, the links go too."""
        target = self.target
        access = await target.access(request, "deleteById")
        writes = target.writes.scoped(access.scope)
        for row in rows:
            id_value = row[target.model.id_name]
            if self.relation.kind is RelationKind.HAS_MANY_THROUGH:
                await self.remove_links(request, parent, id_value)
            await writes.delete_by_id(id_value)

    async def link(self, request: Request, id: str, fk: str) -> Response:
        parent = await self.parent(request, id)
        fk_value = self.target.id_or_none(fk)
        if fk_value is None:
            raise LoopBackError(404, f"No instance with id {fk} found for {self.target.model.name}")
        return json_response(await self.add_link(request, parent, fk_value))

    async def unlink(self, request: Request, id: str, fk: str) -> Response:
        parent = await self.parent(request, id)
        fk_value = self.target.id_or_none(fk)
        if fk_value is not None:
            await self.remove_links(request, parent, fk_value)
        return no_content()

    async def add_link(self, request: Request, parent: Row, fk: Any) -> Row:
        relation = self.relation
        assert relation.through is not None
        assert relation.key_through is not None
        through = self.api.related[relation.through]
        access = await through.access(request, "create")
        body = {relation.key_to: parent[relation.key_from], relation.key_through: fk}
        return (await through.writes.create([access.row(body)]))[0]

    async def remove_links(self, request: Request, parent: Row, fk: Any) -> None:
        through = self.api.related[self.relation.through or ""]
        access = await through.access(request, "deleteById")
        writes = through.writes.scoped(access.scope)
        for link in await self.through_rows(request, parent, fk):
            await writes.delete_by_id(link[through.model.id_name])


def _inq(model: ModelDef, key: str, values: list[Any]) -> Where | None:
    values = [v for v in values if v is not None]
    return parse_where(model, {key: {"inq": values}}) if values else None


def _both(first: Where | None, second: Where | None) -> Where | None:
    if first is None or second is None:
        return first or second
    return And((first, second))
