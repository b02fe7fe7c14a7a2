"""Behaviour only the Redis broker has: lost data, outages, script cache, key layout, secrets, pitfalls.

Tests that stop, restart or flush a server use a private one (`redis_servers`); the shared Redis is only
read and written under the test's own key prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from gateway.broker.base import BrokerError, LeaseLost
from gateway.broker.continuity import ZERO_OFFSET
from gateway.broker.factory import PoolLimits, broker_from_url
from gateway.broker.redis import RedisBroker
from tests.redis_server import RedisServer, RedisServers

from . import eventually, offsets_of, records, still_pending

S = "todos"
OUTAGE_DEADLINE = 5.0  # an operation against a Redis that is down must fail within this many seconds


@pytest.fixture
async def private() -> AsyncIterator[Callable[..., RedisBroker]]:
    """A factory of Redis brokers for private servers, all closed after the test."""
    made: list[RedisBroker] = []

    def make(url: str, **options: object) -> RedisBroker:
        broker = broker_from_url(url, **options)  # type: ignore[arg-type]
        assert isinstance(broker, RedisBroker)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.aclose()


async def _raw(server: RedisServer) -> aioredis.Redis:
    return aioredis.from_url(server.url, protocol=2)


async def test_a_restart_that_loses_the_data_gives_a_new_epoch(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    server = redis_servers.start()
    broker = private(server.url)
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    await broker.append(S, records(1, 2), lease=lease)
    old = await broker.head(S)

    server.restart()

    head = await broker.head(S)
    assert head.epoch != old.epoch
    assert (head.first, head.last) == (None, ZERO_OFFSET)
    with pytest.raises(LeaseLost):  # the lease went with the data; the relay must take it again
        await broker.append(S, records(3), lease=lease)
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    await broker.append(S, records(3), lease=lease)  # also reloads the script the restart forgot
    [entry] = await broker.read(S, ZERO_OFFSET, 10)
    assert (entry.epoch, entry.prev, entry.outbox_id) == (head.epoch, ZERO_OFFSET, 3)


async def test_an_outage_raises_broker_error_quickly_and_the_broker_recovers(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    server = redis_servers.start()
    broker = private(server.url)
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    await broker.ping()

    server.stop()

    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "ping": broker.ping,
        "head": lambda: broker.head(S),
        "read": lambda: broker.read(S, ZERO_OFFSET, 10),
        "wait": lambda: broker.wait(S, ZERO_OFFSET, 10, 30.0),
        "tail": lambda: broker.tail(S, 10),
        "trim": lambda: broker.trim(S, older_than=time.time()),
        "append": lambda: broker.append(S, records(1), lease=lease),
        "acquire_lease": lambda: broker.acquire_lease(S, "relay-2", 30.0),
        "renew_lease": lambda: broker.renew_lease(lease, 30.0),
        "release_lease": lambda: broker.release_lease(lease),
        "notify": lambda: broker.notify(S),
        "notifications": lambda: broker.notifications().__aenter__(),
    }
    for name, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(BrokerError) as failure:
            await asyncio.wait_for(operation(), OUTAGE_DEADLINE)
        assert not isinstance(failure.value, LeaseLost), name
        assert time.monotonic() - started < OUTAGE_DEADLINE, name

    server.start()

    await broker.ping()
    assert (await broker.head(S)).last == ZERO_OFFSET


async def test_a_wait_blocked_when_redis_dies_raises_instead_of_hanging(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    server = redis_servers.start()
    broker = private(server.url)
    waiter = asyncio.create_task(broker.wait(S, ZERO_OFFSET, 10, 60.0))
    assert await still_pending(waiter)
    server.kill()
    with pytest.raises(BrokerError):
        await asyncio.wait_for(waiter, OUTAGE_DEADLINE)


async def test_notifications_raise_when_redis_dies(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    server = redis_servers.start()
    broker = private(server.url)
    async with broker.notifications() as names:
        await broker.notify(S)
        assert await asyncio.wait_for(anext(names), 5.0) == S
        server.kill()
        with pytest.raises(BrokerError):
            await asyncio.wait_for(anext(names), OUTAGE_DEADLINE)


async def test_scripts_are_reloaded_after_script_flush(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    server = redis_servers.start()
    broker = private(server.url)
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    await broker.append(S, records(1), lease=lease)
    raw = await _raw(server)
    try:
        await raw.script_flush()
    finally:
        await raw.aclose()
    await broker.append(S, records(2), lease=lease)
    assert [entry.outbox_id for entry in await broker.read(S, ZERO_OFFSET, 10)] == [1, 2]
    await broker.head(S)
    assert await broker.renew_lease(lease, 30.0)
    await broker.release_lease(lease)


async def test_a_cancelled_blocking_read_drops_its_connection(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    server = redis_servers.start()
    broker = private(server.url)
    raw = await _raw(server)

    async def blocked_reads() -> int:
        clients = await raw.client_list()
        return sum(1 for client in clients if client["cmd"] == "xread" and "b" in client["flags"])

    try:
        waiter = asyncio.create_task(broker.wait(S, ZERO_OFFSET, 10, 30.0))
        await eventually(lambda: _equals(blocked_reads(), 1), what="the XREAD BLOCK reaching Redis")
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await eventually(lambda: _equals(blocked_reads(), 0), what="the cancelled read's connection closing")
    finally:
        await raw.aclose()
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    [offset] = await broker.append(S, records(1), lease=lease)
    assert await broker.wait(S, offset, 10, 0.2) == []
    assert offsets_of(await broker.wait(S, ZERO_OFFSET, 10, 5.0)) == [offset]


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_url_options_cannot_break_blocking_reads(
    redis_url: str, redis_prefix: str, private: Callable[..., RedisBroker]
) -> None:
    """A socket timeout below BLOCK (STACK-NOTES) and RESP3 replies are overridden for the reader."""
    broker = private(f"{redis_url}?socket_timeout=0.2&protocol=3", prefix=redis_prefix)
    started = time.monotonic()
    assert await broker.wait(S, ZERO_OFFSET, 10, 1.0) == []
    assert time.monotonic() - started >= 0.9
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    offsets = await broker.append(S, records(1), lease=lease)
    assert offsets_of(await broker.wait(S, ZERO_OFFSET, 10, 1.0)) == offsets


async def test_keys_share_one_hash_tag_and_entries_use_short_fields(
    redis_url: str, redis_prefix: str
) -> None:
    broker = broker_from_url(redis_url, prefix=redis_prefix)
    assert isinstance(broker, RedisBroker)
    raw = aioredis.from_url(redis_url, protocol=2)
    try:
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        await broker.append(S, records(1), lease=lease)
        await broker.append(S, records(2, before=b"old"), lease=lease)
        keys = {key.decode() async for key in raw.scan_iter(match=f"*{redis_prefix}*")}
        tag = f"{{{redis_prefix}:{S}}}"
        assert keys == {f"{tag}:s", f"{tag}:epoch", f"{tag}:lease"}
        assert broker.keys_for(S) == (f"{tag}:s", f"{tag}:epoch", f"{tag}:lease")
        assert len({key_slot(key.encode()) for key in keys}) == 1
        fields = [entry[1] or {} for entry in await raw.xrange(f"{tag}:s") or []]
        assert [sorted(each) for each in fields] == [
            [b"c", b"e", b"o", b"p", b"t"],  # no `b` when there is no before image
            [b"b", b"c", b"e", b"o", b"p", b"t"],
        ]
    finally:
        await raw.aclose()
        await broker.aclose()


async def test_no_secret_appears_in_any_error_message(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    password = "pa55-w0rd-SECRET"
    server = redis_servers.start(password=password)
    broker = private(server.url)
    await broker.ping()
    assert password not in repr(broker)
    wrong = private(server.url.replace(password, "wrong-SECRET-guess"))
    messages = [await _failure(wrong.ping())]
    server.stop()
    messages += [await _failure(broker.ping()), await _failure(broker.head(S))]
    for message in messages:
        assert "SECRET" not in message
    assert f"redis://:***@127.0.0.1:{server.port}/0" in messages[-1]


async def _failure(operation: Awaitable[object]) -> str:
    with pytest.raises(BrokerError) as failure:
        await operation
    return str(failure.value)


async def test_an_append_retried_after_a_lost_reply_is_not_duplicated(
    redis_servers: RedisServers, private: Callable[..., RedisBroker]
) -> None:
    """redis-py re-sends a command after a connection error; append.lua must recognise its own batch.

    A proxy forwards everything, except that once armed it lets one EVALSHA run on Redis and then cuts the
    connection instead of passing the reply on, exactly like a network failure after the server executed it.
    """
    server = redis_servers.start()
    armed = asyncio.Event()
    dropped = asyncio.Event()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            if upstream and b"EVALSHA" in data and armed.is_set():
                armed.clear()
                dropped.set()
                return

    handlers: list[asyncio.Task[Any]] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        writers.append(client_writer)
        redis_reader, redis_writer = await asyncio.open_connection(server.host, server.port)
        writers.append(redis_writer)
        tasks = [
            asyncio.create_task(pump(client_reader, redis_writer, upstream=True)),
            asyncio.create_task(pump(redis_reader, client_writer, upstream=False)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        await redis_reader.read(65536)  # the reply the client never sees: the script has run
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client_writer.close()
        redis_writer.close()

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = proxy.sockets[0].getsockname()[1]
        broker = private(f"redis://127.0.0.1:{port}/0")
        lease = await broker.acquire_lease(S, "relay-1", 30.0)
        assert lease is not None
        first = await broker.append(
            S, records(1), lease=lease
        )  # loads the script: EVALSHA runs directly next
        armed.set()
        second = await broker.append(S, records(2, 3), lease=lease)
        assert dropped.is_set()
        entries = await broker.read(S, ZERO_OFFSET, 10)
        assert [entry.outbox_id for entry in entries] == [1, 2, 3]
        assert offsets_of(entries) == first + second
    finally:
        await broker.aclose()
        for task in handlers:  # Server.close() leaves accepted connections open before Python 3.12
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in writers:
            writer.close()
        proxy.close()
        await proxy.wait_closed()


async def test_a_full_pool_makes_commands_wait_and_leases_renew_on_their_own_connections(
    redis_url: str, redis_prefix: str, private: Callable[..., RedisBroker]
) -> None:
    """redis-py's default pool raised at once when full; here a command waits for a free connection, fails
    as a BrokerError only past the pool timeout, and the relay's lease is renewed meanwhile."""
    broker = private(redis_url, prefix=redis_prefix, pool=PoolLimits(max_connections=4, timeout=1.0))
    lease = await broker.acquire_lease(S, "relay-1", 30.0)
    assert lease is not None
    key = f"{redis_prefix}:never-pushed"
    hold = [asyncio.create_task(broker.client.blpop([key], timeout=3)) for _ in range(4)]
    try:
        pool = broker.client.connection_pool  # type: ignore[union-attr]

        async def pool_is_full() -> bool:
            return len(pool._in_use_connections) == 4

        await eventually(pool_is_full, what="four connections in use")
        assert await broker.renew_lease(lease, 30.0)
        started = time.monotonic()
        with pytest.raises(BrokerError, match="No connection available"):
            await broker.head(S)
        assert time.monotonic() - started >= 0.9
        await asyncio.gather(*hold)
        assert (await broker.head(S)).last == ZERO_OFFSET
    finally:
        for task in hold:
            task.cancel()
        await asyncio.gather(*hold, return_exceptions=True)
