"""Plural path segments match case-insensitively, as Express routes do in LoopBack 3.

LoopBack's own live-set example opens `/api/colors/change-stream` for a model whose plural is `Colors`.
This middleware rewrites the model segment of such a path to the plural as declared, before anything
routes on it (the security middleware, the change streams and FastAPI alike), so every route, stream and
error message sees one spelling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send


class PluralCaseMiddleware:
    def __init__(self, app: ASGIApp, plurals: Iterable[str], *, rest_root: str) -> None:
        self.app = app
        self.prefix = f"{rest_root}/"
        self.plurals = {plural.lower(): plural for plural in plurals}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(self.prefix):
                segment, slash, rest = path[len(self.prefix) :].partition("/")
                plural = self.plurals.get(segment.lower())
                if plural is not None and plural != segment:
                    # In place, not a copy: a stream tells the request log outside this middleware how
                    # it ended through the scope (`CLIENT_LEFT`), and the log then names the route too.
                    scope["path"] = f"{self.prefix}{plural}{slash}{rest}"
                    raw = scope.get("raw_path")
                    written = f"{self.prefix}{segment}".encode()
                    if isinstance(raw, bytes) and raw.startswith(written):
                        scope["raw_path"] = f"{self.prefix}{plural}".encode() + raw[len(written) :]
        return self.app(scope, receive, send)
