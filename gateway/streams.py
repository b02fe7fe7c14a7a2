"""Server-side change streams: follow a model's changes from Python, straight from the broker (DESIGN §4.5).

LoopBack's `Model.createChangeStream()` for code that serves no HTTP: a worker, a startup hook, a separate
process pointed at the same Redis. It reads the model's stream the way a gateway worker does, so it sees what
every SSE client sees, with the same filter semantics (`options.where` with enter/leave, `options.fields`;
`gateway.fanout.view.filtered_change`) and the same honesty about lost history:

    async with LocalChangeStreams.from_settings(load_settings()) as streams:
        async with streams.open("Todo", where={"done": False}, start="now") as stream:
            async for item in stream:
                if isinstance(item, Reset):
                    ...  # history was lost: rebuild state (re-list), then carry on
                else:
                    print(item.position, item.change)

Items are `Change` (a change object and its position, the SSE `id:`) and `Reset` (the stream could not
continue where it was; DESIGN §4.2). Broker outages are ridden out: the stream keeps its cursor, backs off,
and resumes from the cursor, checking each entry's epoch and `prev` link, so a reconnect loses and repeats
nothing, and anything it cannot vouch for is reported as a `Reset` instead of being skipped silently.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import orjson

from gateway.broker.base import Broker, BrokerError, Entry
from gateway.broker.continuity import (
    ZERO_OFFSET,
    Discontinuity,
    Position,
    chained,
    check_head,
    check_resume,
    format_position,
)
from gateway.broker.factory import broker_from_url
from gateway.client.items import Change, CloseSignal, Reset, StreamError, StreamItem, UnknownModelError
from gateway.client.lifecycle import OpensAndCloses
from gateway.config import Settings
from gateway.fanout.view import Predicate, filtered_change
from gateway.filters import compile_predicate, parse_fields, parse_where
from gateway.models.definition import ModelDef, Registry
from gateway.models.loader import load_registry

__all__ = [
    "Change",
    "ChangeStream",
    "LocalChangeStreams",
    "Reset",
    "StreamError",
    "StreamItem",
    "UnknownModelError",
    "find_model",
    "open_change_stream",
]

log = logging.getLogger("gateway.streams")


READ_BATCH = 500
WAIT_SECONDS = 5.0
"""Longest single blocking read; an idle stream checks the broker's head (a lost history) this often."""
MAX_BACKOFF = 5.0


def find_model(registry: Registry, model: str) -> ModelDef:
    """The model named `model`, or whose REST plural is `model`; raises `UnknownModelError`."""
    found = registry.by_name.get(model) or registry.by_plural.get(model)
    if found is None:
        served = ", ".join(f"{m.name} ({m.plural})" for m in registry.models)
        raise UnknownModelError(f"there is no model {model!r}; the models are: {served}")
    return found


class ChangeStream(OpensAndCloses):
    """The changes of one model, read from the broker, filtered for this stream's options.

    An async context manager and an async iterator of `StreamItem`s that never ends by itself: leave the
    `async with` (or `aclose()`) to stop. One task iterates; `aclose()` may come from any task and ends a
    pending `__anext__` at once.
    """

    def __init__(
        self,
        broker: Broker,
        model: ModelDef,
        *,
        where: Mapping[str, Any] | None = None,
        fields: Any = None,
        start: str = "now",
    ) -> None:
        """`where` and `fields` are LoopBack's (`{"done": false}`; `["id", "title"]` or `{"title": true}`),
        validated here: a bad clause raises `gateway.filters.FilterError` (a ValueError). `start` is `"now"`
        (changes from now on), `"earliest"` (every change the broker still retains, then live) or a
        position (an SSE `id:`, a `Change.position`): continue right after it. A malformed position raises
        ValueError. The broker is not touched before the stream is entered."""
        parsed_where = parse_where(model, where)
        self._predicate: Predicate | None = (
            compile_predicate(model, parsed_where) if parsed_where is not None else None
        )
        self._fields = parse_fields(model, fields)
        if start not in ("now", "earliest"):
            Position.parse(start)
        self._broker = broker
        self._model = model
        self._stream = model.stream
        self._start = start
        self._epoch = ""
        self._cursor = ""  # offset of the last entry read (delivered or filtered out)
        self._queue: deque[StreamItem] = deque()
        self._delivered: str | None = None  # position of the last item handed out
        self._check_head = False
        self._failures = 0
        self._opened = False
        self._closer = CloseSignal()

    @property
    def model(self) -> ModelDef:
        return self._model

    @property
    def position(self) -> str | None:
        """Where this stream is: resuming from here (`start=stream.position`) continues after the last
        item handed out, skipping only entries this stream's filter dropped. None before it is opened."""
        if not self._opened:
            return None
        if self._queue:
            return self._delivered
        return format_position(self._epoch, self._cursor)

    async def open(self) -> None:
        """Find the starting point in the broker; raises `BrokerError` if the broker cannot be reached.

        Resuming from a position of another epoch, or beyond the stream's newest entry, queues a `Reset`
        first (an older position that was trimmed is found, and reset, on the first read)."""
        if self._opened:
            return
        head = await self._broker.head(self._stream)
        self._epoch, self._cursor = head.epoch, head.last
        if self._start == "earliest":
            first = await self._broker.read(self._stream, ZERO_OFFSET, 1)
            if first and first[0].epoch == head.epoch:
                self._cursor = first[0].prev
        self._delivered = format_position(self._epoch, self._cursor)
        if self._start not in ("now", "earliest"):
            self._delivered = self._start
            start = check_resume(self._start, head.epoch, head.last)
            if isinstance(start, Position):
                start = check_head(start.epoch, start.offset, head) or start
            if isinstance(start, Discontinuity):
                self._reset(start)
            else:
                self._cursor = start.offset
        self._opened = True

    async def aclose(self) -> None:
        """Stop: a pending `__anext__` (in any task) and every later one raise StopAsyncIteration.
        Idempotent. The broker is not closed (it belongs to whoever passed it in)."""
        await self._closer.close()
        self._queue.clear()

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> StreamItem:
        if not self._opened:
            raise RuntimeError("open the stream first: `async with open_change_stream(...) as stream`")
        while not self._queue:
            if self._closer.closed:
                raise StopAsyncIteration
            await self._fill()
        if self._closer.closed:
            raise StopAsyncIteration
        item = self._queue.popleft()
        self._delivered = item.position
        return item

    async def _fill(self) -> None:
        """Read the next batch into the queue (possibly nothing), riding out broker errors."""
        try:
            if self._check_head:
                await self._verify_head()
                self._check_head = False
                if self._queue:
                    return
            entries = await self._closer.race(
                self._broker.wait(self._stream, self._cursor, READ_BATCH, WAIT_SECONDS)
            )
        except BrokerError as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 20 == 0:
                log.warning(
                    "change stream %s cannot read (attempt %d): %s", self._stream, self._failures, exc
                )
            delay = min(MAX_BACKOFF, 0.05 * 2**self._failures)
            await self._closer.sleep(random.uniform(delay / 2, delay))
            # The connection broke: the broker may have come back without its history.
            self._check_head = True
            return
        if self._failures:
            log.info("change stream %s reads again after %d failed attempts", self._stream, self._failures)
            self._failures = 0
        if entries is None:  # closed meanwhile
            return
        if not entries:
            self._check_head = True
            return
        for item in chained(self._epoch, self._cursor, entries):
            if isinstance(item, Discontinuity):
                self._reset(item)
            else:
                self._take(item)

    async def _verify_head(self) -> None:
        """Between reads: notice a broker that lost its history (restarted empty, flushed, stream deleted)."""
        discontinuity = check_head(self._epoch, self._cursor, await self._broker.head(self._stream))
        if discontinuity is not None:
            self._reset(discontinuity)

    def _take(self, entry: Entry) -> None:
        """Queue what this stream sees of `entry` (which continues the stream)."""
        self._cursor = entry.offset
        before = orjson.loads(entry.before) if entry.before is not None else None
        change = filtered_change(
            orjson.loads(entry.change),
            before,
            id_name=self._model.id_name,
            predicate=self._predicate,
            fields=self._fields,
        )
        if change is not None:
            self._queue.append(Change(format_position(entry.epoch, entry.offset), change))

    def _reset(self, discontinuity: Discontinuity) -> None:
        reason, resume = discontinuity.reason, discontinuity.resume
        log.warning("change stream %s: %s; continuing after %s", self._stream, reason, resume)
        self._epoch, self._cursor = resume.epoch, resume.offset
        self._queue.append(Reset(reason, str(resume)))


def open_change_stream(
    broker: Broker,
    model: ModelDef,
    *,
    where: Mapping[str, Any] | None = None,
    fields: Any = None,
    start: str = "now",
) -> ChangeStream:
    """A change stream of `model` read from `broker`; enter it (`async with`) to open it.

    In the serving process (a startup hook, a background task), pass the app's own broker:
    `open_change_stream(app.gateway.broker, app.gateway.registry.by_name["Todo"])`. Elsewhere, build one
    with `LocalChangeStreams.from_settings`. See `ChangeStream` for `where`, `fields` and `start`.
    """
    return ChangeStream(broker, model, where=where, fields=fields, start=start)


class LocalChangeStreams:
    """The broker and model registry of a gateway deployment, for a process that serves no HTTP.

    Owns the broker it is given (closes it on `aclose()`), so close the streams opened from it first,
    which leaving their `async with` blocks does.
    """

    def __init__(self, broker: Broker, registry: Registry) -> None:
        self.broker = broker
        self.registry = registry

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalChangeStreams:
        """Build the broker and registry the gateway itself builds from `settings`
        (`GATEWAY_BROKER_URL`, `GATEWAY_REDIS_PREFIX`, `GATEWAY_MODELS`...). Nothing connects yet.

        Raises `StreamError` for the embedded `memory://` broker: it lives inside the serving process, so
        another process would see an empty broker of its own. Raises `ModelDefinitionError` for bad models.
        """
        if settings.uses_memory_broker:
            raise StreamError(
                "the embedded memory:// broker lives inside the serving process, so a separate process "
                "sees none of its changes: set GATEWAY_BROKER_URL to the redis://... URL the gateway uses, "
                "follow the gateway over HTTP (gateway.client.remote), or open the stream inside the "
                "serving process with open_change_stream(app.gateway.broker, model)"
            )
        registry = load_registry(settings.models, settings.models_config)
        broker = broker_from_url(
            settings.broker_url, prefix=settings.redis_prefix, stream_maxlen=settings.stream_maxlen
        )
        return cls(broker, registry)

    def open(
        self,
        model: str | ModelDef,
        *,
        where: Mapping[str, Any] | None = None,
        fields: Any = None,
        start: str = "now",
    ) -> ChangeStream:
        """A change stream of `model` (a name, a REST plural or a definition); enter it to open it.
        Raises `UnknownModelError`, or what `ChangeStream` raises for bad options."""
        definition = find_model(self.registry, model) if isinstance(model, str) else model
        return ChangeStream(self.broker, definition, where=where, fields=fields, start=start)

    async def __aenter__(self) -> LocalChangeStreams:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the broker."""
        await self.broker.aclose()
