"""`POST <rest root>/<Plural>` (create), served ahead of FastAPI's router.

Every change starts as a write, and a create is the write clients send most. Through FastAPI it crossed some
ten layers (its error, body-limit, telemetry and exit-stack middleware, the router's match over every
model's routes, dependency solving) that did nothing for it: its handler reads its own body and its errors
are the app's own handlers' replies. Served here, it is the same handler (`router.create_reply`) and the
same error replies (`errors.error_reply`), for 12 % less server CPU per sequential POST
(loadtests/RESULTS.md). The middleware that wraps the whole app (request log, plural spelling, CORS,
security headers, body limit) still wraps it; any other request, or a path only FastAPI matches (a
trailing slash), passes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.rest.errors import error_reply
from gateway.rest.router import ModelApi, create_reply

RoutePath = Callable[[Scope], str]


class ModelCreates:
    """An ASGI app that serves the creates of `apis` and passes every other request to `app`."""

    def __init__(
        self, app: ASGIApp, apis: Iterable[ModelApi], *, rest_root: str, route_path: RoutePath
    ) -> None:
        self.app = app
        self._apis = {f"{rest_root}/{api.model.plural}": api for api in apis}
        self._route_path = route_path

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """A plain call: what is passed on keeps no frame of this app while it lasts."""
        is_post = scope["type"] == "http" and scope["method"] == "POST"
        api = self._apis.get(self._route_path(scope)) if is_post else None
        if api is None:
            return self.app(scope, receive, send)
        return self._serve(api, scope, receive, send)

    async def _serve(self, api: ModelApi, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await create_reply(api, request)
        except Exception as exc:
            response = await error_reply(request, exc)
        await response(scope, receive, send)
