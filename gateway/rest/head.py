"""HEAD wherever GET is served, as RFC 9110 asks of a general-purpose server and as Express (so LoopBack 3)
does: the GET's status and headers, Content-Length included, and no body.

FastAPI routes a HEAD only to routes that declare it (`HEAD /P/{id}`, LoopBack's exists), so elsewhere a
HEAD meets a 405 whose `Allow` names GET: a load balancer's `HEAD /healthz` or a client's `HEAD /api/Todos`
was refused. This wrapper sees that 405 before anything is sent and answers the request as a GET instead.
A change stream never ends, so its HEAD is left to the routes (never turned into a stream's GET).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

RoutePath = Callable[[Scope], str]
"""The path the app's routes see (without the app's `root_path`)."""


class HeadAsGet:
    def __init__(self, app: ASGIApp, *, streams: Collection[str], route_path: RoutePath) -> None:
        self.app = app
        self._streams = streams
        self._route_path = route_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or self._route_path(scope) in self._streams:
            await self.app(scope, receive, send)
            return
        get_allowed = False

        async def unless_get_allowed(message: Message) -> None:
            nonlocal get_allowed
            if message["type"] == "http.response.start" and message["status"] == 405:
                get_allowed = _allows_get(message.get("headers", ()))
            if not get_allowed:
                await send(message)

        await self.app(scope, receive, unless_get_allowed)
        if get_allowed:
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))


def _allows_get(headers: Collection[tuple[bytes, bytes]]) -> bool:
    allow = b",".join(value for name, value in headers if name.lower() == b"allow")
    return b"GET" in (method.strip().upper() for method in allow.split(b","))


def _without_body(send: Send) -> Send:
    """The GET's start message as it is (its Content-Length says what a GET would send), then no body."""

    async def headers_only(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
        elif not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return headers_only
