"""Follow a gateway's change stream over HTTP, resuming by itself (DESIGN §4.2, §4.5).

What a browser's `EventSource` does, for Python code: `GET /api/<Plural>/change-stream` as Server-Sent
Events, and after any disconnect (a network error, a worker draining on shutdown, a gateway restart, a read
timeout) reconnect with `Last-Event-ID`, so the gateway replays exactly what was missed. Unlike
`EventSource` it backs off exponentially with jitter (starting from the server's `retry:`), honours
`Retry-After`, and stops with `ChangeStreamRejected` on a client error (an unknown model's 404, a bad
filter's 400) instead of retrying forever.

    async with RemoteChangeStream("http://127.0.0.1:3000", model="Todo") as stream:
        async for item in stream:
            ...  # `Change` (with .position, .change) or `Reset`, as from `gateway.streams`

It yields the same items as the in-process API (`gateway.streams.ChangeStream`). Bookmarks (`id:`-only
frames) yield nothing but move `position`, so a resume after a long filtered silence starts near the head.

With `snapshot=True` the first item is a `Snapshot`: every matching row, complete (a connection lost during
it starts it again, and the partial rows are never handed out), then the changes after it. With
`models=("Todo", "Color")` one connection follows several models (`/api/change-stream?models=...`): change
objects carry `"model"`, `position` covers every model, a `reset` of one model is a `ModelReset`, and with
`snapshot=True` that model alone is snapshotted again (its part of the position is dropped, so the gateway
sends it a fresh `Snapshot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from gateway.broker.continuity import ZERO_OFFSET, Position, format_position
from gateway.client.items import Change, CloseSignal, Reset, StreamError, StreamItem, UnknownModelError
from gateway.client.lifecycle import OpensAndCloses
from gateway.client.sse import ServerSentEvent, SSEParser

log = logging.getLogger("gateway.client")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 45.0
"""Seconds without a byte before the connection is taken for dead: three of the gateway's default 15 s
heartbeats. Raise it if the gateway's `GATEWAY_HEARTBEAT` is longer."""
RETRY = 1.0
"""Seconds before the first reconnect, until the server's `retry:` says otherwise."""
MIN_BACKOFF = 0.1
"""Floor of the delay after a failed attempt, even when the server's `retry:` is 0."""
MAX_BACKOFF = 30.0
OPEN_TIMEOUT = 10.0
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rows a `snapshot=True` stream starts with, all of them, read at `position`: the changes that
    follow are every change after it. `model` names the model on a multiplexed stream."""

    position: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ModelReset(Reset):
    """A `Reset` of one model of a multiplexed stream: re-list that model (with `snapshot=True` its new
    `Snapshot` follows by itself)."""

    model: str = ""


RemoteItem = StreamItem | Snapshot


class ChangeStreamRejected(StreamError):
    """The gateway answered with a client error (4xx other than 408/425/429): retrying cannot help."""

    def __init__(self, url: str, status_code: int, message: str) -> None:
        hint = " (is the model name right?)" if status_code == 404 else ""
        super().__init__(f"{url}: {status_code} {message}{hint}")
        self.url = url
        self.status_code = status_code
        self.message = message


class GatewayUnreachable(StreamError):
    """The stream could not be opened within its `open_timeout`: no answer, or only 5xx answers."""


class _Retry(Exception):
    """A failure worth retrying, with the server's `Retry-After` if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteChangeStream(OpensAndCloses):
    """One model's change stream on a gateway, followed over HTTP with automatic resume.

    An async context manager and an async iterator of `StreamItem`s that never ends by itself. Entering it
    opens the first connection (so a 404 or a bad filter raises at once); after that, disconnects are
    ridden out. One task iterates; `aclose()` may come from any task and ends a pending `__anext__`.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        where: Mapping[str, Any] | None = None,
        fields: Any = None,
        models: Sequence[str] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        snapshot: bool = False,
        rest_root: str = "/api",
        start: str = "now",
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        open_timeout: float | None = OPEN_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retry: float = RETRY,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        """`url` is the change-stream URL (`http://host:3000/api/Todos/change-stream`), or with `model`, the
        gateway's base URL (`http://host:3000`): `model` (a name or REST plural) is then looked up in the
        gateway's OpenAPI document. `where`/`fields` become the stream's `options` (the gateway validates
        them: a bad clause raises `ChangeStreamRejected`). `start`: `"now"`, `"earliest"` (every change
        of the current epoch that the gateway still retains; a `Reset` if some were trimmed) or a position
        to continue after. `client` is used as given and not closed; `headers` go with every request
        (e.g. `Authorization`). `open_timeout`: seconds entering keeps retrying before it raises
        `GatewayUnreachable` (0: one attempt; None: forever).

        `models` (names) with the gateway's base URL follows several models on one connection, each with
        its own `options[name]` (`{"where": ..., "fields": ...}`); `start` is then `"now"` or a position
        this stream gave. `snapshot`: begin with a `Snapshot` of the matching rows (when not resuming)."""
        self._models = tuple(models or ())
        if self._models and (model is not None or where is not None or fields is not None):
            raise ValueError("give several models with models= and options=, not model=, where= or fields=")
        if options is not None and not self._models:
            raise ValueError("options= goes with models=; one model takes where= and fields=")
        if self._models:
            if start == "earliest":
                raise ValueError(
                    'a stream of several models starts "now" or at a position it gave, not "earliest"'
                )
        elif start not in ("now", "earliest"):
            Position.parse(start)
        self._url = url.rstrip("/") if model is not None or self._models else url
        self._model = model
        self._stream_url: str | None = url if model is None else None
        self._params: dict[str, str] = {}
        if self._models:
            self._stream_url = f"{self._url}{rest_root}/change-stream"
            self._params["models"] = ",".join(self._models)
            for name, model_options in (options or {}).items():
                self._params[f"options[{name}]"] = orjson.dumps(dict(model_options)).decode()
        else:
            one: dict[str, Any] = {}
            if where is not None:
                one["where"] = dict(where)
            if fields is not None:
                one["fields"] = fields
            if one:
                self._params["options"] = orjson.dumps(one).decode()
        self._snapshot = snapshot
        self._snapshot_rows: dict[str | None, list[dict[str, Any]]] = {}
        self._relist: list[str] = []  # models reset on this connection, to snapshot again
        self._headers = dict(headers or {})
        self._start = start
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        self._retry = retry
        self._max_backoff = max_backoff
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(CONNECT_TIMEOUT, read=read_timeout), follow_redirects=True
        )
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._parser = SSEParser()
        self._queue: deque[RemoteItem] = deque()
        self._delivered: str | None = None  # position of the last item handed out
        self._latest: str | None = None  # newest position the server told (items, bookmarks, resets)
        self._failures = 0
        self._retry_after: float | None = None  # the server's Retry-After for the next backoff
        self._opened = False
        self._closer = CloseSignal()

    @property
    def url(self) -> str | None:
        """The change-stream URL (None until a `model` has been looked up)."""
        return self._stream_url

    @property
    def position(self) -> str | None:
        """Where this stream is: the position after the last item handed out, or a bookmark after it.
        None until the gateway has sent one."""
        return self._delivered if self._queue else self._latest

    async def open(self) -> None:
        """Open the first connection, retrying for up to `open_timeout` seconds; raises
        `ChangeStreamRejected`, `UnknownModelError`, or `GatewayUnreachable` after the timeout."""
        if self._opened:
            return
        loop = asyncio.get_running_loop()
        deadline = None if self._open_timeout is None else loop.time() + self._open_timeout
        while True:
            try:
                await self._open_once()
                break
            except _Retry as exc:
                self._failures += 1
                delay = self._backoff(exc.retry_after)
                if deadline is not None and loop.time() + delay > deadline:
                    await self._disconnect()
                    raise GatewayUnreachable(f"cannot reach the gateway at {self._url}: {exc}") from None
                log.warning("change stream %s: %s; retrying in %.1f s", self._url, exc, delay)
                await self._closer.sleep(delay)
                if self._closer.closed:
                    return
        self._failures = 0
        self._opened = True

    async def _open_once(self) -> None:
        if self._stream_url is None:
            self._stream_url = await self._resolve()
        if self._start == "now":
            await self._connect(None)
        elif self._start == "earliest":
            # The gateway has no "earliest": learn the epoch from the opening bookmark, then replay it all.
            await self._connect(None)
            first = await self._first_position()
            await self._disconnect()
            self._latest = format_position(Position.parse(first).epoch, ZERO_OFFSET)
            await self._connect(self._latest)
        else:
            self._latest = self._start
            await self._connect(self._start)
        self._delivered = self._latest

    async def aclose(self) -> None:
        """Stop: close the connection (and the client, if this stream made it); a pending `__anext__`
        (in any task) and every later one raise StopAsyncIteration. Idempotent."""
        await self._closer.close()
        self._queue.clear()
        await self._disconnect()
        if self._owns_client:
            await self._client.aclose()

    def __aiter__(self) -> RemoteChangeStream:
        return self

    async def __anext__(self) -> RemoteItem:
        if not self._opened and not self._closer.closed:
            raise RuntimeError("open the stream first: `async with RemoteChangeStream(...) as stream`")
        while not self._queue:
            if self._closer.closed:
                raise StopAsyncIteration
            if self._chunks is None:
                await self._reconnect()
                continue
            await self._read()
        if self._closer.closed:
            raise StopAsyncIteration
        item = self._queue.popleft()
        self._delivered = item.position
        return item

    async def _read(self) -> None:
        """Feed the next chunk to the parser; on end of stream or a broken connection, disconnect."""
        assert self._chunks is not None
        try:
            chunk = await self._closer.race(anext(self._chunks, None))
        except (httpx.TransportError, httpx.StreamError) as exc:
            self._failures += 1
            log.warning("change stream %s: connection lost (%s); resuming", self._stream_url, _describe(exc))
            await self._disconnect()
            return
        if chunk is None:
            if not self._closer.closed:
                log.info("change stream %s: the gateway ended the stream; resuming", self._stream_url)
                await self._disconnect()
            return
        if not self._queue:
            self._delivered = self._latest
        for event in self._parser.feed(chunk):
            item = self._item(event)
            if item is not None:
                self._queue.append(item)
        self._parser.comments.clear()  # heartbeats: nothing to keep
        if self._parser.retry is not None:
            self._retry = self._parser.retry / 1000
        if self._parser.last_event_id:
            self._latest = self._parser.last_event_id
        if self._relist:  # reconnect without those models' parts: the gateway snapshots them again
            parts = (self._latest or "").split(",")
            self._latest = ",".join(p for p in parts if p.partition(":")[0] not in self._relist)
            self._relist.clear()
            await self._disconnect()

    async def _reconnect(self) -> None:
        """One reconnect attempt after a backoff, resuming from the newest position known."""
        await self._closer.sleep(self._backoff(None))
        if self._closer.closed:
            return
        try:
            await self._connect(self._latest)
        except _Retry as exc:
            self._failures += 1
            if self._failures <= 3 or self._failures % 20 == 0:
                log.warning("change stream %s: reconnecting failed (%s)", self._stream_url, exc)
            self._retry_after = exc.retry_after
            return
        self._failures = 0

    def _backoff(self, retry_after: float | None) -> float:
        """Exponential backoff from the server's `retry:`, with jitter so that clients spread out."""
        retry_after = retry_after if retry_after is not None else self._retry_after
        self._retry_after = None
        base = self._retry if self._failures == 0 else max(self._retry, MIN_BACKOFF)
        delay = min(self._max_backoff, base * 2 ** max(0, self._failures - 1))
        delay = random.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max_backoff))
        return delay

    async def _connect(self, last_event_id: str | None) -> None:
        """Open a connection; raises `_Retry` for what may pass, `ChangeStreamRejected` for a 4xx."""
        assert self._stream_url is not None
        await self._disconnect()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self._headers}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        params = dict(self._params)
        if self._snapshot and (self._models or not last_event_id):
            params["snapshot"] = "true"  # a multiplexed stream snapshots only the models without a part
        request = self._client.build_request("GET", self._stream_url, params=params, headers=headers)
        try:
            response = await self._closer.race(self._client.send(request, stream=True))
        except httpx.TransportError as exc:
            raise _Retry(_describe(exc)) from None
        if response is None:  # closed meanwhile
            return
        if response.status_code != 200:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            self._raise_for(response, body)
        media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "text/event-stream":
            await response.aclose()
            raise ChangeStreamRejected(self._stream_url, 200, f"not an event stream (Content-Type {media!r})")
        self._response = response
        self._chunks = response.aiter_bytes()
        self._parser = SSEParser()
        self._snapshot_rows.clear()  # a snapshot cut short starts again

    def _raise_for(self, response: httpx.Response, body: bytes) -> None:
        assert self._stream_url is not None
        status = response.status_code
        message = _error_message(body) or response.reason_phrase
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise ChangeStreamRejected(self._stream_url, status, message)
        raise _Retry(f"{status} {message}", _retry_after(response))

    async def _disconnect(self) -> None:
        response, self._response = self._response, None
        chunks, self._chunks = self._chunks, None
        close_chunks = getattr(chunks, "aclose", None)
        if close_chunks is not None:
            with contextlib.suppress(httpx.HTTPError, RuntimeError):  # a generator already finished
                await close_chunks()
        if response is not None:
            with contextlib.suppress(httpx.HTTPError):
                await response.aclose()

    async def _first_position(self) -> str:
        """Read until the gateway's opening bookmark has given this connection's position."""
        assert self._chunks is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_timeout
        while not self._parser.last_event_id:
            if loop.time() > deadline:
                raise _Retry("the gateway sent no opening position")
            try:
                chunk = await anext(self._chunks, None)
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise _Retry(_describe(exc)) from None
            if chunk is None:
                raise _Retry("the gateway ended the stream before its opening position")
            self._parser.feed(chunk)
        return self._parser.last_event_id

    async def _resolve(self) -> str:
        """The change-stream URL of `model`, from the gateway's OpenAPI document (which tags each model's
        routes with its name); `<url>/api/<model>/change-stream` if the gateway publishes none."""
        assert self._model is not None
        fallback = f"{self._url}/api/{self._model}/change-stream"
        try:
            response = await self._client.get(f"{self._url}/openapi.json", headers=self._headers)
        except httpx.TransportError as exc:
            raise _Retry(_describe(exc)) from None
        if response.status_code >= 500 or response.status_code in _RETRYABLE_4XX:
            raise _Retry(f"{response.status_code} {response.reason_phrase}", _retry_after(response))
        try:
            paths = response.json()["paths"] if response.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            paths = None
        if not isinstance(paths, dict):
            return fallback
        served: list[str] = []
        for path, item in paths.items():
            if not path.endswith("/change-stream"):
                continue
            plural = path.rsplit("/", 2)[-2]
            operation = item.get("get") if isinstance(item, dict) else None
            tags = operation.get("tags") or [] if isinstance(operation, dict) else []
            if self._model == plural or self._model in tags:
                return f"{self._url}{path}"
            served.append(f"{tags[0]} ({plural})" if tags else plural)
        raise UnknownModelError(
            f"the gateway at {self._url} serves no model {self._model!r}; it serves: {', '.join(served)}"
        )

    def _item(self, event: ServerSentEvent) -> RemoteItem | None:
        try:
            if event.event == "data":
                change = orjson.loads(event.data)
                model = change.get("model") if self._models else None
                rows = self._snapshot_rows.get(model)
                if self._snapshot and rows is None and not _has_part(event.last_event_id, model):
                    rows = self._snapshot_rows[model] = []
                if rows is not None:
                    rows.append(change["data"])
                    return None
                return Change(event.last_event_id, change)
            if event.event == "snapshot-end":
                data = orjson.loads(event.data)
                model = data.get("model") if self._models else None
                return Snapshot(event.last_event_id, self._snapshot_rows.pop(model, []), model)
            if event.event == "reset":
                data = orjson.loads(event.data)
                position = data.get("position") or event.last_event_id
                if not self._models:
                    return Reset(data["reason"], position)
                if self._snapshot:
                    self._relist.append(data["model"])
                return ModelReset(data["reason"], position, data["model"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise StreamError(
                f"{self._stream_url}: malformed {event.event!r} event: {event.data[:200]!r}"
            ) from exc
        if event.event == "error":  # e.g. {"reason": "token-expired"}; the gateway ends the stream next
            log.warning("change stream %s: the gateway says %s", self._stream_url, event.data[:200])
        else:
            log.debug("change stream %s: ignoring %r event", self._stream_url, event.event)
        return None


def _has_part(event_id: str, model: str | None) -> bool:
    """Whether the stream has told a position for `model` (None: the one model of a plain stream)."""
    if model is None:
        return bool(event_id)
    return f",{event_id}".find(f",{model}:") >= 0


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_message(body: bytes) -> str:
    """The message of LoopBack's error envelope, else the start of the body."""
    try:
        document = orjson.loads(body)
        message = document["error"]["message"]
        if isinstance(message, str):
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return body[:200].decode("utf-8", errors="replace").strip()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
