"""Build a broker from a URL, the way redis-py's `from_url` builds a client.

Schemes:

- `memory://` — `MemoryBroker`, one process only (the `make run` default).
- `redis://[[user]:password@]host[:port][/db][?option=value...]` and `rediss://...` (TLS) — `RedisBroker` on
  one Redis server; query options are redis-py's (`socket_timeout`, `ssl_cert_reqs`, ...).
- `redis+sentinel://[[user]:password@]host[:port][,host2[:port2]...]/service_name[/db]` — the master that the
  Sentinels name; the credentials are the master's, `?sentinel_username=&sentinel_password=` are the
  Sentinels' own. Sentinel port defaults to 26379.
- `redis+cluster://[[user]:password@]host[:port][,host2[:port2]...]` — a Redis Cluster, from any of its nodes.

Every error names the URL with its password replaced by `***`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import MaxConnectionsError

from gateway.broker.base import Broker
from gateway.broker.memory import MemoryBroker
from gateway.broker.redis import RedisBroker, RedisClient

SCHEMES = ("memory", "redis", "rediss", "redis+sentinel", "redis+cluster")
CONNECT_TIMEOUT = 2.0
"""Seconds to open a connection; a Redis that is down fails fast instead of hanging a request."""
COMMAND_TIMEOUT = 5.0
"""Seconds a short command may take (a large append batch included)."""
RETRIES = 3
"""Retries of a short command after a connection error (with jittered backoff capped at 0.5 s), so a Redis
restart or failover is ridden out while an outage still surfaces as `BrokerError` within a few seconds."""
LEASE_CONNECTIONS = 2
"""Connections of the relay's lease client: renewing a lease never waits behind the request traffic."""
_SECRET_WORDS = ("password", "secret", "token")


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """How many connections a client may open, and how long a command waits for a free one.

    redis-py's default pool raises `MaxConnectionsError` at once past 100; these pools wait instead, and a
    wait longer than `timeout` is a `BrokerError` the caller answers loudly (a 503), never a silent gap.
    """

    max_connections: int = 64
    timeout: float = 5.0


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel master's pool, waiting for a free connection like `BlockingConnectionPool`."""


PUBSUB_HEADROOM = 2
"""Connections per cluster node beyond the commands' share, for the pub/sub connection that bypasses it."""


class WaitingRedisCluster(RedisCluster):
    """A cluster client whose commands wait (up to `pool_timeout`) for one of `max_connections` slots.

    redis-py's cluster pools per node and raises `MaxConnectionsError` at once when a node's pool is
    empty; no pool class of its can wait. A command holds one connection of one node, so with at most
    `max_connections` commands in flight no node's pool can run out, and the rest queue here instead. A
    wait past `pool_timeout` is the `MaxConnectionsError` the pool would have raised (a `BrokerError`).
    """

    def __init__(self, *, max_connections: int, pool_timeout: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections + PUBSUB_HEADROOM, **kwargs)
        self._slots = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._pool_timeout):  # not wait_for: 3.11's can lose a cancellation
                await self._slots.acquire()
        except TimeoutError:
            raise MaxConnectionsError(
                f"no cluster connection came free within {self._pool_timeout} s"
            ) from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._slots.release()


def broker_from_url(
    url: str, *, prefix: str = "gw", stream_maxlen: int | None = 100_000, pool: PoolLimits | None = None
) -> Broker:
    """A broker for `url` (see the module docstring for the schemes). Nothing connects until first use.

    `prefix` starts every Redis key and channel, so several gateways can share one Redis. `stream_maxlen` is
    the length kept per stream (exact in memory, approximate in Redis; None keeps everything). `pool` sizes
    each client's connection pool. Raises ValueError for an unknown scheme or a malformed URL, naming the
    URL with its password redacted.
    """
    pool = pool or PoolLimits()
    lease_pool = PoolLimits(LEASE_CONNECTIONS, pool.timeout)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"malformed broker URL {redact_url(url)}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return MemoryBroker(stream_maxlen=stream_maxlen)
    label = redact_url(url)
    client: RedisClient
    blocking: RedisClient
    lease: RedisClient
    if scheme in ("redis", "rediss"):
        client = _single(url, pool, blocking=False)
        blocking = _single(url, pool, blocking=True)
        lease = _single(url, lease_pool, blocking=False)
        on_close: tuple[Any, ...] = ()
    elif scheme == "redis+sentinel":
        sentinel, service, master_options = _sentinel(url)

        def master(limits: PoolLimits, *, blocking: bool) -> Redis:
            master_client: Redis = sentinel.master_for(
                service,
                connection_pool_class=BlockingSentinelPool,
                max_connections=limits.max_connections,
                timeout=limits.timeout,
                **master_options,
                **_options(blocking=blocking),
            )
            return master_client

        client = master(pool, blocking=False)
        blocking = master(pool, blocking=True)
        lease = master(lease_pool, blocking=False)
        on_close = (sentinel.aclose,)
    elif scheme == "redis+cluster":
        client = _cluster(url, pool, blocking=False)
        blocking = _cluster(url, pool, blocking=True)
        lease = _cluster(url, lease_pool, blocking=False)
        on_close = ()
    else:
        raise ValueError(
            f"unsupported broker URL scheme {scheme!r} in {label}; use one of "
            + ", ".join(f"{name}://" for name in SCHEMES)
        )
    return RedisBroker(
        client,
        blocking,
        lease_client=lease,
        prefix=prefix,
        stream_maxlen=stream_maxlen,
        label=label,
        redact=_secrets(url),
        on_close=on_close,
    )


def redact_url(url: str) -> str:
    """`url` with the password of its user info and any password-like query value replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_is_secret(name) for name, _ in pairs):
        query = urlencode([(name, "***" if _is_secret(name) else value) for name, value in pairs], safe="*")
    redacted = f"{parts.scheme}:" if parts.scheme else ""
    if url[len(redacted) :].startswith("//"):
        redacted += f"//{netloc}"
    redacted += parts.path
    redacted += f"?{query}" if query else ""
    return redacted + (f"#{parts.fragment}" if parts.fragment else "")


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _secrets(url: str) -> list[str]:
    """The password and password-like query values of `url`, to be scrubbed from error messages."""
    parts = urlsplit(url)
    found = [unquote(parts.password or "")]
    found += [value for name, value in parse_qsl(parts.query) if _is_secret(name)]
    return [secret for secret in found if secret]


def _options(*, blocking: bool) -> dict[str, Any]:
    """Client settings. RESP2 so XREAD has one reply shape; bytes replies because changes are bytes."""
    return {
        "protocol": 2,
        "decode_responses": False,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        # No timeout for blocking reads: RedisBroker bounds each one itself (see its docstring).
        "socket_timeout": None if blocking else COMMAND_TIMEOUT,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 1 if blocking else RETRIES),
    }


def _single(url: str, limits: PoolLimits, *, blocking: bool) -> Redis:
    options = _options(blocking=blocking)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=limits.max_connections, timeout=limits.timeout, **options
    )
    # The URL's query options win over keyword arguments in redis-py; these must hold whatever it says.
    forced = (
        ("protocol", "decode_responses", "socket_timeout") if blocking else ("protocol", "decode_responses")
    )
    pool.connection_kwargs.update({name: options[name] for name in forced})
    return Redis.from_pool(pool)


@dataclass(frozen=True, slots=True)
class _Endpoints:
    hosts: list[tuple[str, int]]
    path: list[str]
    username: str | None
    password: str | None
    query: dict[str, str]


def _endpoints(url: str, default_port: int, allowed_query: tuple[str, ...]) -> _Endpoints:
    """Parse `scheme://[user[:password]@]host[:port][,host[:port]...][/path][?query]`."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or "]" in port:  # no port given (a bracketed IPv6 address has colons of its own)
            host, port = item.strip(), ""
        host = host.strip("[]")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"bad host {item!r} in broker URL {redact_url(url)}")
        hosts.append((host, int(port) if port else default_port))
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - set(allowed_query))
    if unknown:
        raise ValueError(f"unsupported option(s) {', '.join(unknown)} in broker URL {redact_url(url)}")
    path = [unquote(segment) for segment in parts.path.split("/") if segment]
    return _Endpoints(hosts, path, username, password, query)


def _sentinel(url: str) -> tuple[Sentinel, str, dict[str, Any]]:
    endpoints = _endpoints(url, 26379, ("sentinel_username", "sentinel_password"))
    if not 1 <= len(endpoints.path) <= 2:
        raise ValueError(
            f"broker URL {redact_url(url)} must name the service: redis+sentinel://host/service[/db]"
        )
    service = endpoints.path[0]
    db = endpoints.path[1] if len(endpoints.path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"bad database {db!r} in broker URL {redact_url(url)}")
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "username": endpoints.query.get("sentinel_username"),
        "password": endpoints.query.get("sentinel_password"),
    }
    sentinel = Sentinel(endpoints.hosts, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    master = {"db": int(db), "username": endpoints.username, "password": endpoints.password}
    return sentinel, service, master


def _cluster(url: str, limits: PoolLimits, *, blocking: bool) -> RedisCluster:
    endpoints = _endpoints(url, 6379, ())
    if endpoints.path:
        raise ValueError(f"a Redis Cluster has no databases: drop the path of broker URL {redact_url(url)}")
    return WaitingRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in endpoints.hosts],
        username=endpoints.username,
        password=endpoints.password,
        max_connections=limits.max_connections,
        pool_timeout=limits.timeout,
        **_options(blocking=blocking),
    )
