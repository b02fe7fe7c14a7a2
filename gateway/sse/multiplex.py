"""`GET|POST <rest root>/change-stream?models=Todo,Color`: several models' change streams on one connection.

Browsers allow six HTTP/1.1 connections per origin, so a page that follows five models in two tabs starves
(DESIGN §4.2a). Here each model gets the very stream its own endpoint would serve (same admission: ACLs,
stream slots, `options`, snapshot, replay and hand-over, slow-consumer bounds), run as a task whose output
is relabelled (`gateway.sse.combined`) and written to the one connection in the order it was produced.

Per-model options are `options[Todo]=<JSON>` (or the bracket form, or `{"options": {"Todo": ...}}` in a POST
body), stream tickets `ticket[Todo]=...`, `snapshot=true` applies to every model. Everything is admitted
before the `200`, so any refusal is one 4xx/503 in LoopBack's envelope and nothing stays registered. When
one model's stream ends (the worker drains, the client fell behind, credentials expired) the connection
ends, and the client resumes every model with its `Last-Event-ID`. SSE only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.filters import FilterError, argument, object_argument
from gateway.models.definition import ModelDef
from gateway.ops.requestlog import CLIENT_LEFT, SERVER_SEND
from gateway.sse.combined import CombinedPosition, relabel
from gateway.sse.endpoint import HEADERS
from gateway.sse.frames import Format, preamble
from gateway.sse.negotiation import resume_from, stream_options
from gateway.sse.route import METHODS, Admitted, ChangeStreamRoutes, admit_or_answer, route_path, stream_path
from gateway.sse.snapshot import wants_snapshot
from gateway.tasks import cancel_and_wait

INNER_HEADERS_DROPPED = (b"last-event-id", b"accept", b"options", b"content-length", b"content-type")


class MultiplexedStreams:
    """An ASGI app that serves the multiplexed stream and passes every other request to `streams`."""

    def __init__(
        self,
        streams: ChangeStreamRoutes,
        models: tuple[ModelDef, ...],
        *,
        rest_root: str,
        retry_ms: int,
        max_bytes: int,
    ) -> None:
        self.app: ASGIApp = streams
        self._streams = streams
        self._path = f"{rest_root}/change-stream"
        self._rest_root = rest_root
        self._models = {model.name: model for model in models}
        self._retry_ms = retry_ms
        self._max_bytes = max_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """A plain call, so that the streams passed on keep no frame of this app while they last."""
        if scope["type"] != "http" or route_path(scope) != self._path or scope["method"] not in METHODS:
            return self.app(scope, receive, send)
        return self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = await admit_or_answer(
            self._admit(Request(scope, receive)), scope, receive, send, self._retry_ms
        )
        if admitted is None:
            return
        names, streams, position = admitted
        try:
            await MultiplexedResponse(names, streams, position, self._retry_ms, self._max_bytes)(
                scope, receive, send
            )
        finally:
            for _, stream in streams:
                if stream.release is not None:
                    await stream.release()

    async def _admit(
        self, request: Request
    ) -> tuple[list[str], list[tuple[Scope, Admitted]], CombinedPosition]:
        names = [name.strip() for name in request.query_params.get("models", "").split(",") if name.strip()]
        if not names:
            raise FilterError("Name the models to follow, like ?models=Todo,Color")
        unknown = [name for name in names if name not in self._models]
        if unknown:
            raise FilterError(f"Unknown model {unknown[0]!r}; the models are {', '.join(self._models)}")
        if len(set(names)) != len(names):
            raise FilterError("A model is named twice in models=")
        options = await stream_options(request)
        extra = [name for name in options if name not in names]
        if extra:
            raise FilterError(f"options names {extra[0]!r}, which is not in models=")
        tickets = argument(request.query_params.multi_items(), "ticket") or {}
        position = CombinedPosition(names, resume_from(request))
        snapshot = request.query_params.get("snapshot")
        snapshots = wants_snapshot(request.query_params, {})
        admitted: list[tuple[Scope, Admitted]] = []
        try:
            for name in names:
                model = self._models[name]
                query = {"_format": "event-stream"}
                model_options = object_argument(options.get(name))
                if model_options:
                    query["options"] = orjson.dumps(model_options).decode()
                if snapshot is not None:
                    query["snapshot"] = snapshot
                if isinstance(tickets.get(name), str):
                    query["ticket"] = tickets[name]
                scope = self._inner_scope(
                    request.scope, model, query, position.resume_for(name, snapshot=snapshots)
                )
                admitted.append((scope, await self._streams.admit(Request(scope), model)))
        except BaseException:
            for _, stream in admitted:
                await stream.abandon()
            raise
        return names, admitted, position

    def _inner_scope(self, scope: Scope, model: ModelDef, query: dict[str, str], resume: str | None) -> Scope:
        """The request `model`'s own endpoint would get: same credentials, its options and position."""
        headers = [(k, v) for k, v in scope["headers"] if k not in INNER_HEADERS_DROPPED]
        if resume is not None:
            headers.append((b"last-event-id", resume.encode()))
        path = scope.get("root_path", "") + stream_path(self._rest_root, model)
        inner = {
            **scope,
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": urlencode(query).encode(),
            "headers": headers,
        }
        inner.pop(SERVER_SEND, None)
        return inner


class MultiplexedResponse:
    """Runs each model's stream as a task and writes their relabelled output to one connection, in order.

    Nothing is written until every model's stream has sent its opening (so the first `id:` names them
    all). Output waiting for the client is bounded by `max_bytes`: past it the models' writes wait, and
    their own slow-consumer bounds apply, exactly as on their own endpoints.
    """

    def __init__(
        self,
        names: Sequence[str],
        streams: list[tuple[Scope, Admitted]],
        position: CombinedPosition,
        retry_ms: int,
        max_bytes: int,
    ) -> None:
        self._names = names
        self._streams = streams
        self._position = position
        self._retry_ms = retry_ms
        self._max_bytes = max_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._opened: set[str] = set()
        self._writing = False
        self._send: Send | None = None
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._disconnected = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS[Format.SSE]})
        await send(
            {"type": "http.response.body", "body": preamble(Format.SSE, self._retry_ms), "more_body": True}
        )
        self._send = scope.get(SERVER_SEND, send)
        watcher = asyncio.ensure_future(self._watch(receive))
        tasks = [
            asyncio.ensure_future(stream.response(inner, self._receive, self._sender(name)))
            for name, (inner, stream) in zip(self._names, self._streams, strict=True)
        ]
        for task in tasks:
            task.add_done_callback(lambda _task: self._ready.set())
        try:
            await self._until_one_ends(tasks)
        finally:
            scope[CLIENT_LEFT] = self._disconnected.is_set()
            await cancel_and_wait([*tasks, watcher])
        failed = next((t.exception() for t in tasks if not t.cancelled() and t.exception()), None)
        if failed is not None and not self._disconnected.is_set():
            raise failed
        if not self._disconnected.is_set():
            await send({"type": "http.response.body", "body": b""})

    async def _until_one_ends(self, tasks: Sequence[asyncio.Future[None]]) -> None:
        """Wait until one model's stream ends (or the client leaves), then write what is left."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            if any(task.done() for task in tasks):
                await self._drain()
                return

    async def _drain(self) -> None:
        """Write everything pending, unless a write is under way (it writes what comes meanwhile too)."""
        if self._writing:
            return
        assert self._send is not None, "set when the response starts"
        self._writing = True
        try:
            while self._pending:
                data = b"".join(self._pending)
                self._pending, self._pending_bytes = [], 0
                self._room.set()
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            self._writing = False

    def _sender(self, name: str) -> Send:
        """The `send` of `name`'s stream. Once every stream has opened, it writes to the connection itself,
        so a delivery costs no task switch (as on a per-model stream); a write that must wait for the
        client suspends it, and the model's own stream finishes it (its slow-consumer rules apply)."""

        async def send(message: Message) -> None:
            if message["type"] != "http.response.body":
                return
            body: bytes = message.get("body", b"")
            while self._pending_bytes > self._max_bytes:
                self._room.clear()
                await self._room.wait()
            if body:
                frames = relabel(name, body, self._position)
                if frames:
                    self._pending.append(frames)
                    self._pending_bytes += len(frames)
            self._opened.add(name)
            if len(self._opened) == len(self._names):
                await self._drain()

        return send

    async def _receive(self) -> Message:
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._disconnected.set()
                self._ready.set()
                return
