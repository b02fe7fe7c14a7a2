"""Wiring security into the app: middleware (outermost: CORS, security headers, body limit) and `/auth`."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from gateway.security.guard import Security
from gateway.security.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from gateway.security.routes import auth_router

CORS_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID", "options"]
EXPOSED_HEADERS = ["X-Change-Stream-Position", "X-Request-ID", "Retry-After"]


def install_security(app: FastAPI, security: Security) -> None:
    settings = security.settings
    # add_middleware puts each new one outside the ones before it.
    app.add_middleware(BodyLimitMiddleware, limit=settings.limit_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    origins = settings.cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            # Credentials (cookies, Authorization) only for origins named one by one: with "*" Starlette
            # would echo any origin back and let every site read responses with the user's cookie.
            allow_credentials="*" not in origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.include_router(auth_router(security))
