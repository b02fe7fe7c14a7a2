"""LoopBack's error envelope: `{"error": {"statusCode", "name", "message", "code"?, "details"?}}`.

Every error a client can cause is rendered here, so no client input ever reaches a bare 500 page; a real
server fault is logged and answered like LoopBack with `debug: false`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import compile_path

from gateway.changes.writes import WriteRejected
from gateway.filters import FilterError
from gateway.models.validation import InvalidInstance

log = logging.getLogger("gateway.rest")
JSON_TYPE = "application/json; charset=utf-8"


class LoopBackError(Exception):
    """An error to answer in LoopBack's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        name: str = "Error",
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.name = name
        self.code = code
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"statusCode": self.status, "name": self.name, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def not_found(model_name: str, id_value: Any) -> LoopBackError:
    return LoopBackError(404, f'Unknown "{model_name}" id "{id_value}".', code="MODEL_NOT_FOUND")


def error_response(error: LoopBackError, *, head: bool = False) -> Response:
    headers = {"X-Content-Type-Options": "nosniff", **error.headers}
    body = b"" if head else orjson.dumps(error.body())
    return Response(body, status_code=error.status, media_type=JSON_TYPE, headers=headers)


def as_loopback_error(exc: Exception) -> LoopBackError:
    """Map the gateway's own exceptions to LoopBack errors."""
    if isinstance(exc, LoopBackError):
        return exc
    if isinstance(exc, InvalidInstance):
        return LoopBackError(422, exc.message, name="ValidationError", details=exc.details)
    if isinstance(exc, FilterError):
        return LoopBackError(400, str(exc))
    if isinstance(exc, WriteRejected):
        return LoopBackError(exc.status, exc.message, code=exc.code)
    if isinstance(exc, ClientDisconnect):  # nobody reads the reply; it is counted as the client's fault
        return LoopBackError(400, "The client left before sending its whole request")
    raise TypeError(f"not a client error: {exc!r}")


CLIENT_ERRORS = (LoopBackError, InvalidInstance, FilterError, WriteRejected, ClientDisconnect)


async def client_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(as_loopback_error(exc), head=request.method == "HEAD")


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    documented = allowed_methods(request) if exc.status_code == 405 else []
    if documented:  # Starlette names the methods of the first route of the path only
        headers["Allow"] = ", ".join(documented)
    error = LoopBackError(exc.status_code, str(exc.detail), headers=headers)
    return error_response(error, head=request.method == "HEAD")


def allowed_methods(request: Request) -> list[str]:
    """Every method the app's OpenAPI document lists for the request's path (RFC 9110's `Allow`), so that
    the header and the document agree; none for a path the document leaves out (`/healthz`), whose `Allow`
    is then Starlette's."""
    paths = request.app.openapi().get("paths", {})
    matching = [template for template in paths if compile_path(template)[0].match(request.url.path)]
    literal = [template for template in matching if "{" not in template]  # `/count` is not an `{id}`
    return sorted({method.upper() for template in literal or matching for method in paths[template]})


INVALID_REGULAR_EXPRESSION = "2201B"
"""PostgreSQL's SQLSTATE for a pattern its regex dialect rejects, though Python's `re` (which validated the
filter) accepted it."""


async def database_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) == INVALID_REGULAR_EXPRESSION:
        error = LoopBackError(400, "The regexp is not supported by the database's regular expressions")
        return error_response(error, head=request.method == "HEAD")
    return await server_error_handler(request, exc)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return server_error()


def server_error() -> Response:
    """LoopBack's answer to a server fault with `debug: false`: no detail."""
    body = orjson.dumps({"error": {"statusCode": 500, "message": "Internal Server Error"}})
    return Response(
        body, status_code=500, media_type=JSON_TYPE, headers={"X-Content-Type-Options": "nosniff"}
    )


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

HANDLERS: dict[type[Exception], ErrorHandler] = {
    StarletteHTTPException: http_error_handler,
    **dict.fromkeys(CLIENT_ERRORS, client_error_handler),
    DBAPIError: database_error_handler,
    Exception: server_error_handler,
}
"""The app's exception handlers; also used, by `error_reply`, where a request is served ahead of FastAPI."""


async def error_reply(request: Request, exc: Exception) -> Response:
    """The reply the app's handlers give `exc`: the handler of its nearest class, as Starlette looks up."""
    handler = next(HANDLERS[cls] for cls in type(exc).__mro__ if cls in HANDLERS)
    return await handler(request, exc)
