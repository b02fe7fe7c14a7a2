"""Pure ASGI middleware: response security headers, and the request body size limit.

Pure ASGI (not `BaseHTTPMiddleware`) for the same reason as the request log: a change stream is an endless
response, and each body message must go straight to the server. Both touch a response only at its start.
Their `__call__` returns the inner app's awaitable instead of awaiting it, so an open stream keeps no frame
of theirs alive (idle memory per stream, loadtests/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.rest.errors import LoopBackError, error_response

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
"""For everything but HTML (the API explorer pages load their own scripts)."""


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.app(scope, receive, _SendWithHeaders(send))


class _SendWithHeaders:
    """`send` with the security headers added to the response's start. An object with slots rather than a
    closure: an open stream holds it for its whole life, and the closure costs twice the bytes."""

    __slots__ = ("send",)

    def __init__(self, send: Send) -> None:
        self.send = send

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
            html = any(name.lower() == b"content-type" and b"html" in value for name, value in headers)
            if not html and API_CSP[0] not in present:
                headers.append(API_CSP)
            message = {**message, "headers": headers}
        return self.send(message)


class BodyTooLarge(LoopBackError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes", code="PAYLOAD_TOO_LARGE")


class BodyLimitMiddleware:
    """413 for a body over `limit` bytes: at once from `Content-Length`, or while a chunked body streams in
    (the handler's `await request.body()` then raises, and the error handlers answer in the envelope)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            if length.isdigit() and int(length) <= self.limit:
                return self.app(scope, receive, send)  # the server stops at Content-Length
            error = BodyTooLarge(self.limit) if length.isdigit() else LoopBackError(400, "Bad Content-Length")
            return error_response(error, head=scope["method"] == "HEAD")(scope, receive, send)
        if not chunked:
            return self.app(scope, receive, send)  # no body at all (RFC 9112 §6.3)
        return self.app(scope, _counting(receive, self.limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return counting_receive
