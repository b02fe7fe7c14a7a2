"""uvicorn's `ProxyHeadersMiddleware` as a plain call, so that an open stream keeps no frame of it.

uvicorn wraps the application in `ProxyHeadersMiddleware` (`proxy_headers`, on by default and under
gunicorn's uvicorn worker): a coroutine that rewrites the scope's `client` and `scheme` from
`X-Forwarded-For`/`X-Forwarded-Proto` sent by a trusted proxy, then awaits the application. Awaiting keeps its
frame suspended as long as the request lasts, 0.3 KB per open stream (loadtests/RESULTS.md, "Fourth pass"),
though it has nothing left to do. This one makes the same rewrite and returns the application's awaitable.
`GuardedHttpToolsProtocol` swaps it in for uvicorn's (same trusted hosts), under `gateway serve` and
gunicorn alike; tests/ops/test_proxyheaders.py holds it to uvicorn's behaviour.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


class PlainProxyHeaders(ProxyHeadersMiddleware):
    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:  # type: ignore[override]
        if scope["type"] != "lifespan":
            self._rewrite(scope)
        return self.app(scope, receive, send)

    def _rewrite(self, scope: Any) -> None:
        """uvicorn's rewrite (0.54, `ProxyHeadersMiddleware.__call__`), line for line."""
        client_addr = scope.get("client")
        client_host = client_addr[0] if client_addr else None
        if client_host not in self.trusted_hosts:
            return
        x_forwarded_proto_value: bytes | None = None
        x_forwarded_for_values: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                x_forwarded_proto_value = value
            elif name == b"x-forwarded-for":
                x_forwarded_for_values.append(value)
        if x_forwarded_proto_value is not None:
            x_forwarded_proto = x_forwarded_proto_value.decode("latin1").strip()
            if x_forwarded_proto in {"http", "https", "ws", "wss"}:
                if scope["type"] == "websocket":
                    scope["scheme"] = x_forwarded_proto.replace("http", "ws")
                else:
                    scope["scheme"] = x_forwarded_proto
        if x_forwarded_for_values:
            x_forwarded_for = b", ".join(x_forwarded_for_values).decode("latin1")
            host, port = self.trusted_hosts.get_trusted_client_address(x_forwarded_for)
            if host:  # an empty X-Forwarded-For gives no usable client (uvicorn issue 1068)
                scope["client"] = (host, port)


@functools.cache
def plain(app: Any) -> Any:
    """`app` with uvicorn's proxy-headers wrapper (if that is what it is) made a `PlainProxyHeaders`: the
    same inner application and trusted hosts. One per loaded application, not one per connection."""
    if type(app) is not ProxyHeadersMiddleware:
        return app
    wrapper = PlainProxyHeaders.__new__(PlainProxyHeaders)
    wrapper.app = app.app
    wrapper.trusted_hosts = app.trusted_hosts
    return wrapper
