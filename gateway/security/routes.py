"""`/auth`: stream tickets and the session cookie, the two ways a browser's `EventSource` authenticates.

- `POST /auth/stream-ticket` (`Authorization: Bearer`, body `{"model": "Todo"}` or `?model=Todo`) →
  `{"ticket": "...", "expiresIn": 60}`; open `/api/Todos/change-stream?ticket=...` within that time, once.
- `POST /auth/session` (`Authorization: Bearer`) sets the token as an HttpOnly, SameSite=Lax cookie (Secure
  unless `GATEWAY_AUTH_COOKIE_SECURE=false`) that expires with the token → `{"expiresIn": n}`.
  `DELETE /auth/session` clears it. The cookie authenticates GET and HEAD only: streams and reads.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from gateway.models.definition import ModelDef
from gateway.rest.errors import JSON_TYPE, LoopBackError
from gateway.security.acl import Grant
from gateway.security.guard import Security
from gateway.security.limits import limit_key, store_unavailable
from gateway.security.principal import Principal, access_denied, authorization_required
from gateway.security.store import StoreError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _reply(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON_TYPE, headers=NO_STORE)


def auth_router(security: Security) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["auth"])
    settings = security.settings

    async def bearer_principal(request: Request) -> Principal:
        if not security.enabled:
            raise LoopBackError(404, "Authentication is not configured on this gateway")
        if "authorization" not in request.headers:
            raise authorization_required()
        principal = await security.authenticate(request)
        assert principal is not None  # an Authorization header either authenticates or raises
        return principal

    @router.post(
        "/stream-ticket",
        summary="Issue a single-use change-stream ticket",
        openapi_extra=_ticket_body(security),
    )
    async def stream_ticket(request: Request) -> Response:
        principal = await bearer_principal(request)
        model = _model(security, await _model_name(request))
        if security.decision(model, "createChangeStream", principal).grant is Grant.NONE:
            raise access_denied()
        key = limit_key(principal.id, None)
        await security.limits.count_ticket(key)
        try:
            ticket, expires_in = await security.tickets.issue(principal, model)
        except StoreError:
            raise store_unavailable() from None
        return _reply({"ticket": ticket, "expiresIn": expires_in})

    @router.post("/session", summary="Keep the bearer token in an HttpOnly cookie (for EventSource)")
    async def open_session(request: Request) -> Response:
        principal = await bearer_principal(request)
        token = request.headers["authorization"].strip().partition(" ")[2].strip()
        max_age = int(principal.expires_at - time.time())
        response = _reply({"expiresIn": max_age})
        response.set_cookie(
            settings.auth_cookie_name,
            token,
            max_age=max_age,
            path=settings.rest_root or "/",
            secure=settings.auth_cookie_secure,
            httponly=True,
            samesite="lax",
        )
        return response

    @router.delete("/session", status_code=204, summary="Forget the session cookie")
    async def close_session() -> Response:
        response = Response(status_code=204, headers=NO_STORE)
        response.delete_cookie(
            settings.auth_cookie_name,
            path=settings.rest_root or "/",
            secure=settings.auth_cookie_secure,
            httponly=True,
            samesite="lax",
        )
        return response

    return router


def _ticket_body(security: Security) -> dict[str, Any]:
    """The ticket's body in the OpenAPI document: the model, by name or plural (`?model=` does the same)."""
    models = security.registry.models
    names = sorted({name for model in models for name in (model.name, model.plural)})
    schema = {"type": "object", "properties": {"model": {"enum": names}}, "required": ["model"]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _model_name(request: Request) -> str:
    name = request.query_params.get("model")
    if name is None:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise LoopBackError(400, "The request body is not valid JSON", name="SyntaxError") from None
        name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise LoopBackError(400, 'Name the model: {"model": "Todo"} or ?model=Todo')
    return name


def _model(security: Security, name: str) -> ModelDef:
    registry = security.registry
    model = registry.by_name.get(name) or registry.by_plural.get(name)
    if model is None:
        raise LoopBackError(404, f'There is no model "{name[:100]}"', code="MODEL_NOT_FOUND")
    return model
