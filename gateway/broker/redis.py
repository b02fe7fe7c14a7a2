"""The production broker: Redis Streams, one stream per model, shared by every worker on every host.

Keys. With prefix P and stream S: `{P:S}:s` the stream, `{P:S}:epoch` its epoch, `{P:S}:lease` the relay's
lease. One hash tag per stream keeps them in one Redis Cluster slot, so the Lua scripts may touch them
together; no command here ever spans two streams. Relays are woken over the pub/sub channel `P:wake`, whose
messages are stream names. Entry fields: `c` change, `b` before (absent when None), `o` outbox id, `p` prev
offset, `e` epoch, `t` committed_at.

Epochs. A Redis that restarts empty (or is flushed) loses the epoch key with the stream; the next `head` or
`append` creates a new epoch, so subscribers holding old positions are told their history is gone. redis-py's
retries would otherwise hide such a restart entirely.

Two clients, because blocking reads and short commands want opposite settings:
- `client` runs short commands with bounded socket timeouts and redis-py's retries on connection errors.
  Retrying is safe for every command sent here: reads, `SET NX` and the compare-and-expire scripts are
  idempotent, and append.lua recognises a replay of the batch it has just appended.
- `blocking_client` runs `XREAD BLOCK` and pub/sub with no socket timeout: a socket timeout below BLOCK makes
  redis-py fail and silently re-issue the read (see STACK-NOTES). Each blocking read is instead bounded on our
  side (BLOCK plus a grace period), which also catches a connection that died without a reset.
- `lease_client` (the short-command client unless given) acquires, renews and releases the relay's leases on
  a pool of its own, so a burst of requests that fills the short-command pool cannot make a relay lose its
  lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from importlib.resources import files
from types import TracebackType
from typing import Any, NamedTuple, TypeAlias, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.typing import StreamRangeResponse, XReadResponse

from gateway.broker.base import BrokerError, Entry, Lease, LeaseLost, Record, StreamHead
from gateway.broker.continuity import ZERO_OFFSET, new_epoch, offset_key
from gateway.tasks import cancel_and_wait

RedisClient: TypeAlias = Redis | RedisCluster
_T = TypeVar("_T")

MAX_BLOCK = 5.0
"""Longest single XREAD BLOCK, in seconds; longer waits loop, so a dead connection is noticed within
MAX_BLOCK + REPLY_GRACE."""
REPLY_GRACE = 5.0
"""How long past its BLOCK a blocking read may take before the connection is declared dead."""
SUBSCRIBE_TIMEOUT = 5.0
"""How long `notifications()` waits for Redis to confirm the subscription."""
WAKE_PING_INTERVAL = 15.0
"""A silent subscription is pinged after this long, and declared dead after twice as long."""
_LEASE_LOST = "LEASELOST"


class StreamKeys(NamedTuple):
    """The Redis keys of one stream (all in one hash slot)."""

    stream: str
    epoch: str
    lease: str


class _Closed(Exception):
    """The broker was closed while an operation was waiting."""


class RedisBroker:
    """A `Broker` on Redis Streams (standalone, Sentinel or Cluster), for any number of workers and hosts.

    Build it with `broker_from_url()`, which makes both clients from one URL. The broker owns the clients:
    `aclose()` closes them and then runs `on_close` (e.g. closing a Sentinel's own connections).
    """

    def __init__(
        self,
        client: RedisClient,
        blocking_client: RedisClient,
        *,
        lease_client: RedisClient | None = None,
        prefix: str = "gw",
        stream_maxlen: int | None = 100_000,
        label: str = "redis",
        redact: Sequence[str] = (),
        on_close: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        """`client` and `blocking_client` must use RESP2 and undecoded (bytes) replies, and `blocking_client`
        no socket timeout. `stream_maxlen` is the approximate length kept per stream (`MAXLEN ~`; None keeps
        everything). `label` names the server in error messages (a redacted URL); any `redact` string (a
        password) is replaced by `***` wherever it would appear in one."""
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"a Redis key prefix must be non-empty and without braces, not {prefix!r}")
        if stream_maxlen is not None and stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be at least 1 or None, not {stream_maxlen}")
        self._client = client
        self._blocking = blocking_client
        self._lease_client = lease_client or client
        self._prefix = prefix
        self._maxlen = "" if stream_maxlen is None else str(stream_maxlen)
        self._label = label
        self._redact = tuple(secret for secret in redact if secret)
        self._on_close = tuple(on_close)
        self._wake_channel = f"{prefix}:wake"
        self._append_script = self._script("append.lua")
        self._head_script = self._script("head.lua")
        self._renew_script = self._script("renew.lua")
        self._release_script = self._script("release.lua")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Future[None] | None = None
        self._closed = False

    def _script(self, name: str) -> AsyncScript:
        # Script objects send EVALSHA and reload the source on NOSCRIPT (after SCRIPT FLUSH or a restart).
        return self._client.register_script(files("gateway.broker").joinpath(name).read_text("utf-8"))

    def __repr__(self) -> str:
        return f"RedisBroker({self._label!r}, prefix={self._prefix!r})"

    @property
    def client(self) -> RedisClient:
        """The short-command client, for small single-key helpers that share this Redis (security's ticket
        and limit store); the broker still owns and closes it."""
        return self._client

    async def __aenter__(self) -> RedisBroker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def keys_for(self, stream: str) -> StreamKeys:
        tag = f"{{{self._prefix}:{stream}}}"
        return StreamKeys(f"{tag}:s", f"{tag}:epoch", f"{tag}:lease")

    async def append(self, stream: str, records: Sequence[Record], *, lease: Lease) -> list[str]:
        self._check_open()
        if lease.stream != stream:
            raise LeaseLost(f"a lease on stream {lease.stream!r} cannot append to {stream!r}")
        keys = self.keys_for(stream)
        args: list[str | bytes | int] = [lease.token, new_epoch(), self._maxlen, len(records)]
        for record in records:
            has_before = record.before is not None
            args += [
                record.outbox_id,
                record.change,
                int(has_before),
                record.before or b"",
                repr(record.committed_at),
            ]
        with self._errors("append"):
            offsets = await self._append_script(keys=list(keys), args=args)
        return [_text(offset) for offset in offsets]

    async def read(self, stream: str, after: str, count: int) -> list[Entry]:
        self._check_open()
        _check_count(count)
        offset_key(after)
        with self._errors("read"):
            reply = await self._client.xrange(self.keys_for(stream).stream, f"({after}", "+", count=count)
        return self._entries(reply)

    async def wait(self, stream: str, after: str, count: int, timeout: float) -> list[Entry]:  # noqa: ASYNC109
        """As the contract says; the blocking reads run in a task of their own, so that `aclose()` can end
        them (this returns []) and so that a cancelled wait leaves no half-read reply in a pooled connection:
        redis-py drops a connection whose read was cancelled."""
        if timeout <= 0:
            return await self.read(stream, after, count)
        self._check_open()
        _check_count(count)
        offset_key(after)
        try:
            return await self._until_closed(self._block(self.keys_for(stream).stream, after, count, timeout))
        except _Closed:
            return []

    async def _block(self, key: str, after: str, count: int, timeout: float) -> list[Entry]:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            block_ms = max(1, int(min(deadline - loop.time(), MAX_BLOCK) * 1000))  # never BLOCK 0 (= forever)
            with self._errors("wait"):
                async with asyncio.timeout(block_ms / 1000 + REPLY_GRACE):
                    reply = await self._blocking.xread({key: after}, count=count, block=block_ms)
            entries = self._xread_entries(reply)
            if entries or loop.time() >= deadline:
                return entries

    async def head(self, stream: str) -> StreamHead:
        self._check_open()
        keys = self.keys_for(stream)
        with self._errors("head"):
            epoch, first, last = await self._head_script(keys=[keys.stream, keys.epoch], args=[new_epoch()])
        return StreamHead(_text(epoch), _text(first) or None, _text(last) or ZERO_OFFSET)

    async def tail(self, stream: str, count: int) -> list[Entry]:
        self._check_open()
        _check_count(count)
        with self._errors("tail"):
            reply = await self._client.xrevrange(self.keys_for(stream).stream, "+", "-", count=count)
        return self._entries(reply)[::-1]

    async def trim(self, stream: str, *, older_than: float) -> None:
        """`XTRIM MINID ~` by the entries' ids (their append time, which is never before their commit), capped
        at the newest id so the newest entry always stays. Two commands, not one script: an append in between
        only adds entries above the cap, which are kept either way."""
        self._check_open()
        key = self.keys_for(stream).stream
        with self._errors("trim"):
            newest = await self._client.xrevrange(key, "+", "-", count=1)
            if not newest or newest[0][0] is None:
                return
            minid = min(f"{max(0, int(older_than * 1000))}-0", _text(newest[0][0]), key=offset_key)
            await self._client.xtrim(key, minid=minid, approximate=True)

    async def acquire_lease(self, stream: str, holder: str, ttl: float) -> Lease | None:
        self._check_open()
        key = self.keys_for(stream).lease
        token = secrets.token_hex(16)
        with self._errors("acquire_lease"):
            # When SET NX fails, either someone holds the lease, or redis-py retried a SET whose reply was
            # lost and the lease is ours after all.
            if not await self._lease_client.set(key, token, nx=True, px=_ttl_ms(ttl)) and (
                await self._lease_client.get(key) != token.encode()
            ):
                return None
        return Lease(stream=stream, holder=holder, token=token)

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        self._check_open()
        with self._errors("renew_lease"):
            renewed = await self._renew_script(
                keys=[self.keys_for(lease.stream).lease],
                args=[lease.token, _ttl_ms(ttl)],
                client=self._lease_client,
            )
        return bool(renewed)

    async def release_lease(self, lease: Lease) -> None:
        self._check_open()
        with self._errors("release_lease"):
            await self._release_script(
                keys=[self.keys_for(lease.stream).lease], args=[lease.token], client=self._lease_client
            )

    async def notify(self, stream: str) -> None:
        self._check_open()
        with self._errors("notify"):
            await self._client.publish(self._wake_channel, stream)

    @contextlib.asynccontextmanager
    async def notifications(self) -> AsyncIterator[AsyncIterator[str]]:
        """Every `notify` made after entering is delivered (entering waits for Redis to confirm the
        subscription). The iterator ends when the broker is closed and raises `BrokerError` when the
        subscription breaks for longer than redis-py's reconnect retries: leave and enter again then."""
        self._check_open()
        pubsub = self._blocking.pubsub()
        names = self._wake_names(pubsub)
        try:
            with self._errors("subscribe"):
                await pubsub.subscribe(self._wake_channel)
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    while True:
                        message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT)
                        if message is not None and message["type"] == "subscribe":
                            break
            yield names
        finally:
            await names.aclose()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _wake_names(self, pubsub: PubSub) -> AsyncGenerator[str, None]:
        pinged = False
        while True:
            try:
                message = await self._until_closed(self._next_message(pubsub))
            except _Closed:
                return
            if message is None:  # silent for a while: a dead connection or just a quiet system?
                if pinged:
                    raise BrokerError(f"notifications from {self._label}: the subscription stopped answering")
                with self._errors("notifications"):
                    await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message["type"] == "message":
                yield _text(message["data"])

    async def _next_message(self, pubsub: PubSub) -> dict[str, Any] | None:
        with self._errors("notifications"):
            message: dict[str, Any] | None = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=WAKE_PING_INTERVAL
            )
        return message

    async def ping(self) -> None:
        self._check_open()
        with self._errors("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        """End blocked `wait` calls and notification iterators, then close both clients. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        await cancel_and_wait(list(self._tasks))  # redis-py drops the connections they were reading from
        lease_client = () if self._lease_client is self._client else (self._lease_client.aclose(),)
        await asyncio.gather(
            self._blocking.aclose(),
            self._client.aclose(),
            *lease_client,
            *(close() for close in self._on_close),
            return_exceptions=True,
        )

    async def _until_closed(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run `work` until it finishes or the broker closes (raises `_Closed`)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait((task, self._closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([task])
        if task.cancelled():
            raise _Closed
        return task.result()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"the broker for {self._label} is closed")

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """Turn redis-py's and the socket layer's errors into `BrokerError`s that name no secret."""
        try:
            yield
        except ResponseError as exc:
            if str(exc).startswith(_LEASE_LOST):
                raise LeaseLost(f"{operation}: the lease is no longer held") from None
            raise self._error(operation, exc) from exc
        except (RedisError, RedisClusterException, OSError) as exc:  # OSError includes TimeoutError
            raise self._error(operation, exc) from exc

    def _error(self, operation: str, exc: BaseException) -> BrokerError:
        detail = str(exc) or "no reply in time"
        for secret in self._redact:
            detail = detail.replace(secret, "***")
        return BrokerError(f"{operation} on {self._label} failed: {type(exc).__name__}: {detail}")

    def _entries(self, reply: StreamRangeResponse | None) -> list[Entry]:
        entries: list[Entry] = []
        for offset, fields in reply or ():
            if offset is None or fields is None:
                continue
            try:
                before = fields.get(b"b")
                entries.append(
                    Entry(
                        offset=_text(offset),
                        prev=_text(fields[b"p"]),
                        epoch=_text(fields[b"e"]),
                        outbox_id=int(fields[b"o"]),
                        change=_bytes(fields[b"c"]),
                        before=None if before is None else _bytes(before),
                        committed_at=float(fields[b"t"]),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise BrokerError(f"entry {_text(offset)} on {self._label} is not a gateway entry") from exc
        return entries

    def _xread_entries(self, reply: XReadResponse) -> list[Entry]:
        if not reply:
            return []
        if not isinstance(reply, list):  # RESP3 shape: the clients must pin protocol=2
            raise BrokerError(f"wait on {self._label}: unexpected XREAD reply; use protocol=2 clients")
        return self._entries(reply[0][1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _ttl_ms(ttl: float) -> int:
    if not ttl > 0:
        raise ValueError(f"a lease ttl must be positive, not {ttl}")
    return max(1, round(ttl * 1000))


def _check_count(count: int) -> None:
    if count < 1:  # COUNT 0 would mean "no limit" to XREAD
        raise ValueError(f"count must be at least 1, not {count}")
