"""`PlainProxyHeaders` rewrites the scope exactly as uvicorn's `ProxyHeadersMiddleware` does, without
keeping a frame: table-driven, both run on the same scopes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.ops.proxyheaders import PlainProxyHeaders, plain

CASES = [
    ("127.0.0.1", "127.0.0.1", [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]),
    ("127.0.0.1", "127.0.0.1", [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.1")]),
    ("127.0.0.1", "127.0.0.1", [(b"x-forwarded-for", b"")]),
    ("127.0.0.1", "127.0.0.1", [(b"x-forwarded-proto", b"gopher")]),
    ("127.0.0.1", "127.0.0.1", [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]),
    ("10.9.9.9", "127.0.0.1", [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]),
    ("10.9.9.9", "*", [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b" http ")]),
    ("10.9.9.9", "10.0.0.0/8", [(b"x-forwarded-for", b"5.6.7.8, 10.1.1.1")]),
    ("127.0.0.1", "127.0.0.1", []),
]


async def _scope_seen(middleware: Any, scope: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware.app = app
    await middleware(scope, None, None)
    return seen


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest.mark.parametrize(("client", "trusted", "headers"), CASES)
async def test_the_same_rewrite_as_uvicorns(
    kind: str, client: str, trusted: str, headers: list[tuple[bytes, bytes]]
) -> None:
    scope = {"type": kind, "scheme": "http", "client": (client, 5000), "headers": headers}
    uvicorns = ProxyHeadersMiddleware(None, trusted_hosts=trusted)  # type: ignore[arg-type]
    ours = plain(ProxyHeadersMiddleware(None, trusted_hosts=trusted))  # type: ignore[arg-type]
    assert isinstance(ours, PlainProxyHeaders)
    expected = await _scope_seen(uvicorns, copy.deepcopy(scope))
    assert await _scope_seen(ours, copy.deepcopy(scope)) == expected


def test_only_uvicorns_wrapper_is_replaced() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert plain(app) is app
    wrapped = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
    replaced = plain(wrapped)
    assert replaced.app is app
    assert replaced.trusted_hosts is wrapped.trusted_hosts
    assert plain(wrapped) is replaced  # once per loaded application
