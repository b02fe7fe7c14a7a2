"""Wiring security into the app: the middleware around everything (CORS, security headers, body limit), and
`/auth`."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from gateway.security.guard import Security
from gateway.security.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from gateway.security.routes import auth_router

CORS_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID", "options"]
EXPOSED_HEADERS = ["X-Change-Stream-Position", "X-Request-ID", "Retry-After"]


def install_security(app: FastAPI, security: Security) -> None:
    app.include_router(auth_router(security))


def security_middleware(app: ASGIApp, security: Security) -> ASGIApp:
    """`app` wrapped, innermost first, in the body limit, the security headers and (when origins are
    configured) CORS. Outside FastAPI's own stack, so the change streams served ahead of it get them too."""
    settings = security.settings
    wrapped: ASGIApp = SecurityHeadersMiddleware(BodyLimitMiddleware(app, limit=settings.limit_body_bytes))
    origins = settings.cors_origins
    if origins:
        wrapped = CORSMiddleware(
            wrapped,
            allow_origins=origins,
            # Credentials (cookies, Authorization) only for origins named one by one: with "*" Starlette
            # would echo any origin back and let every site read responses with the user's cookie.
            allow_credentials="*" not in origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    return wrapped
