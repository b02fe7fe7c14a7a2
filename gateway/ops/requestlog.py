"""One log line per request, and for a change stream one when it opens and one when it closes, each with a
correlation id.

The id is the request's `X-Request-ID` when it has a sane one (the load balancer sets it, so its access log
and ours share it) or a fresh one, and it is echoed back in the response's `X-Request-ID`.

This is a pure ASGI middleware, not Starlette's `BaseHTTPMiddleware`: that one runs the endpoint in another
task and pipes every body chunk through a memory stream, which costs a task switch per write and breaks
disconnect detection on endless responses. Here a stream is touched twice: when its response starts (the
open line) and when the app returns (the close line, with the duration and why it ended). In between, the
`send` passed down hands body messages straight to the server's `send` (a plain call that returns the
server's own awaitable, no extra coroutine frame), so a delivery costs one function call more.

Credentials never reach the log: no header is logged, and query parameters whose names look secret
(`access_token`, `ticket`, ...) have their values replaced. The close reason of a stream is read from how it
ended: the client went away (`client`, as the stream tells through `CLIENT_LEFT`), it was cut off for
falling behind (`slow`), the worker is draining (`shutdown`), the server ended it for another reason such as
a reset during replay (`server`), or it failed (`error`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ops.logs import ACCESS_LOGGER
from gateway.ops.metrics import Metrics, NoMetrics

REQUEST_ID_HEADER = b"x-request-id"
STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes arrive every few seconds from every prober; they are logged at DEBUG only."""
SECRET_WORDS = ("token", "ticket", "pass", "secret", "key", "auth", "sign", "credential", "session", "code")
REDACTED = "[redacted]"
MAX_QUERY_LOGGED = 512
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


class SubscriberCutOff(Exception):
    """Raised out of a stream ended on purpose because its client fell behind; the server drops the
    socket, and the log says `slow`."""


SERVER_SEND = "gateway.server_send"
"""The server's own `send`, put in the scope for a change stream's body messages. The middleware inside the
request log (CORS, security headers, body limit) only ever looks at a response's start, so an endless stream
may skip their pass-through wrappers on every delivery (about 2 µs each, loadtests/RESULTS.md). Middleware
that changes body messages must not be added inside it."""
CLIENT_LEFT = "gateway.client_left"
"""Set to True in the scope by a stream that ended because its client went away. The log is told rather
than watching `receive` itself: a wrapper there would keep a frame alive per open stream."""


class _Exchange:
    """What the middleware learns about one request while it runs, and the `send` it passes down: the
    response's start goes through the log, every body message straight to the server's `send`.

    An object with slots rather than a closure: an open stream holds it for its whole life, and a closure
    over its four cells costs twice the bytes (loadtests/RESULTS.md, "Fourth pass")."""

    __slots__ = ("middleware", "request_id", "scope", "send", "started", "status", "stream")

    def __init__(
        self, middleware: RequestLogMiddleware, scope: Scope, send: Send, request_id: str, started: float
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.send = send
        self.request_id = request_id
        self.started = started
        self.status = 0
        self.stream = False

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            return self.middleware._start(self.scope, self, message, self.send)
        return self.send(message)


class RequestLogMiddleware:
    """Wraps the whole application (outside its error handlers, so a 500 is logged and carries the id)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        draining: Callable[[], bool] = lambda: False,
        metrics: Metrics | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self._draining = draining
        self._metrics = metrics or NoMetrics()
        self._log = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, send, request_id_of(scope), time.perf_counter())
        scope[SERVER_SEND] = send
        try:
            await self.app(scope, receive, exchange)
        except BaseException as exc:
            self._finish(scope, exchange, exc)
            raise
        self._finish(scope, exchange, None)

    async def _start(self, scope: Scope, exchange: _Exchange, message: Message, send: Send) -> None:
        exchange.status = message["status"]
        headers = list(message.get("headers", ()))
        for name, value in headers:
            if name == b"content-type":
                exchange.stream = exchange.status == 200 and value.startswith(STREAM_TYPES)
        headers.append((REQUEST_ID_HEADER, exchange.request_id.encode()))
        if exchange.stream and self._log.isEnabledFor(logging.INFO):
            fields = self._fields(scope, exchange)
            fields["resume"] = _resumes(scope)
            self._log.info("stream open", extra={"fields": fields})
        await send({**message, "headers": headers})

    def _finish(self, scope: Scope, exchange: _Exchange, error: BaseException | None) -> None:
        duration = time.perf_counter() - exchange.started
        status = exchange.status or 500
        kind = "stream" if scope["path"].endswith("/change-stream") else "rest"
        self._metrics.http_request(kind, scope["method"], status, None if exchange.stream else duration)
        if exchange.stream:
            if self._log.isEnabledFor(logging.INFO):
                fields = self._fields(scope, exchange)
                fields["duration_s"] = round(duration, 3)
                fields["reason"] = self._close_reason(scope, error)
                self._log.info("stream close", extra={"fields": fields})
            return
        quiet = scope["path"] in QUIET_PATHS and status < 500 and error is None
        level = logging.WARNING if status >= 500 else logging.DEBUG if quiet else logging.INFO
        if self._log.isEnabledFor(level):
            fields = self._fields(scope, exchange)
            fields["status"] = status
            fields["duration_ms"] = round(duration * 1000, 2)
            if error is not None:
                fields["error"] = type(error).__name__
            self._log.log(level, "request", extra={"fields": fields})

    def _close_reason(self, scope: Scope, error: BaseException | None) -> str:
        if isinstance(error, SubscriberCutOff):
            return "slow"
        if error is not None:
            return "error"
        if scope.get(CLIENT_LEFT):
            return "client"
        if self._draining():
            return "shutdown"
        return "server"

    @staticmethod
    def _fields(scope: Scope, exchange: _Exchange) -> dict[str, object]:
        fields: dict[str, object] = {
            "request_id": exchange.request_id,
            "method": scope["method"],
            "path": scope["path"],
        }
        query = scope.get("query_string", b"")
        if query:
            fields["query"] = redact_query(query)
        client = scope.get("client")
        if client:
            fields["client"] = client[0]
        return fields


def request_id_of(scope: Scope) -> str:
    """The request's own `X-Request-ID` if it is short and plain (no log injection), else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return _new_request_id()


class _RequestIds:
    """New request ids, 32 hex digits as `uuid4().hex` was: a random prefix drawn once per process (again in
    a forked worker) and a counter. `uuid4` read the kernel's random source for every request, some 2 % of a
    create's CPU; an id only has to be unique, not unguessable."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_new_request_id = _RequestIds()


def redact_query(query: bytes) -> str:
    """The query string as sent, with the values of secret-looking parameters replaced, cut to a sane
    length."""
    text = query.decode("latin-1")
    parts = []
    for part in text.split("&"):
        name, sep, _value = part.partition("=")
        parts.append(f"{name}={REDACTED}" if sep and _secret(unquote_plus(name)) else part)
    return "&".join(parts)[:MAX_QUERY_LOGGED]


def _secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _resumes(scope: Scope) -> bool:
    if any(name == b"last-event-id" for name, _ in scope["headers"]):
        return True
    return b"lastEventId=" in scope.get("query_string", b"")
