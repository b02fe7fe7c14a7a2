"""`/client/live.js` (always) and the live page at `/` (unless `GATEWAY_PAGE=false`): ES modules, no build.

The client's source is `clients/js/live.js` (the npm package); the package data links to it, so a wheel (and
the image) carries a copy. The page learns the models from `/page/models.json`, made from the registry.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Response

from gateway.models.definition import ModelDef, Registry

STATIC = files("gateway.web").joinpath("static")
NO_CACHE = {"cache-control": "no-cache"}
PAGE_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
JAVASCRIPT = "text/javascript; charset=utf-8"


def web_router(registry: Registry, *, rest_root: str, page: bool) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    client = STATIC.joinpath("live.js").read_bytes()

    @router.get("/client/live.js")
    async def live_js() -> Response:
        return Response(client, media_type=JAVASCRIPT, headers=NO_CACHE)

    if not page:
        return router
    index = STATIC.joinpath("index.html").read_bytes()
    page_js = STATIC.joinpath("page.js").read_bytes()
    models = {"rest": rest_root, "models": [describe(model) for model in registry.models]}

    @router.get("/")
    async def index_html() -> Response:
        headers = {**NO_CACHE, "content-security-policy": PAGE_CSP}
        return Response(index, media_type="text/html; charset=utf-8", headers=headers)

    @router.get("/page/page.js")
    async def page_script() -> Response:
        return Response(page_js, media_type=JAVASCRIPT, headers=NO_CACHE)

    @router.get("/page/models.json")
    async def model_list() -> dict[str, Any]:
        return models

    return router


def describe(model: ModelDef) -> dict[str, Any]:
    """What the page needs to show and edit a model's rows."""
    return {
        "name": model.name,
        "plural": model.plural,
        "id": model.id_name,
        "properties": [
            {"name": p.name, "type": p.type.value, "required": p.required, "generated": p.generated}
            for p in model.properties
            if not p.hidden
        ],
    }
