"""`Connection`: how a queue wakes a connection task that idles in `receive`, and only that; direct writes,
a write that blocks, and the deadlines the hub's tick makes it check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from gateway.broker.memory import MemoryBroker
from gateway.fanout.hub import Hub, HubSettings, Subscription
from gateway.fanout.queue import DeliveryQueue, State
from gateway.models.loader import load_registry
from gateway.ops.metrics import NoMetrics
from gateway.ops.requestlog import SubscriberCutOff
from gateway.sse.connection import Connection
from gateway.sse.frames import Format
from tests.conftest import EXAMPLE_MODELS

TODO = load_registry(EXAMPLE_MODELS).by_name["Todo"]
KEY = (Format.SSE, "None", "None")


class Socket:
    """A `send` that records body chunks; while `full`, every write waits until `drain()`."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.full = False
        self._room = asyncio.Event()

    async def send(self, message: Message) -> None:
        if self.full:
            self._room.clear()
            await self._room.wait()
        if message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    def drain(self) -> None:
        self.full = False
        self._room.set()


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    broker = MemoryBroker()
    hub = Hub(broker, HubSettings(max_events=3, max_bytes=100, heartbeat=2.0, write_timeout=0.3), NoMetrics())
    yield hub
    await hub.aclose()
    await broker.aclose()


async def connect(hub: Hub, socket: Socket, **kwargs: float) -> tuple[Subscription, Connection]:
    subscription = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False, **kwargs)
    return subscription, Connection(subscription, socket.send, socket.send, NoMetrics())


async def run_live(connection: Connection, receive: asyncio.Future[Message]) -> asyncio.Task[None]:
    async def receive_once() -> Message:
        return await asyncio.shield(receive)

    task = asyncio.create_task(connection.live(receive_once))
    await asyncio.sleep(0)
    return task


async def test_a_live_connection_is_written_from_the_callers_task(hub: Hub) -> None:
    socket = Socket()
    subscription, connection = await connect(hub, socket)
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    subscription.queue.push(b"1;", "1-0")
    subscription.queue.push(b"2;", "2-0")
    connection.flush()
    assert socket.chunks == [b"1;2;"]  # at once, in one write, without the connection's task running
    assert not task.done()
    subscription.queue.close("shutdown")
    async with asyncio.timeout(1):
        await task
    assert task.cancelling() == 0


async def test_frames_queued_before_going_live_wake_the_task_to_write_them(hub: Hub) -> None:
    socket = Socket()
    subscription, connection = await connect(hub, socket)
    subscription.queue.push(b"1;", "1-0")
    connection.flush()  # not live yet: nothing written from here
    assert socket.chunks == []
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    await asyncio.sleep(0.01)
    assert socket.chunks == [b"1;"]
    subscription.queue.close("shutdown")
    async with asyncio.timeout(1):
        await task


async def test_the_disconnect_comes_through_when_nothing_wakes_it(hub: Hub) -> None:
    subscription, connection = await connect(hub, Socket())
    receive = asyncio.get_running_loop().create_future()
    task = await run_live(connection, receive)
    receive.set_result({"type": "http.disconnect"})
    async with asyncio.timeout(1):
        await task
    assert subscription.queue.close_reason == "disconnect"


async def test_a_wake_after_the_message_arrived_loses_only_that_message(hub: Hub) -> None:
    subscription, connection = await connect(hub, Socket())
    receive = asyncio.get_running_loop().create_future()
    task = await run_live(connection, receive)
    receive.set_result({"type": "http.disconnect"})  # the task is now scheduled, not yet run
    subscription.queue.close("shutdown")
    async with asyncio.timeout(1):
        await task
    assert subscription.queue.close_reason == "shutdown"
    assert task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_goes_on(hub: Hub) -> None:
    _, connection = await connect(hub, Socket())
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_elsewhere_during_a_wake_goes_on(hub: Hub) -> None:
    subscription, connection = await connect(hub, Socket())
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    subscription.queue.close("shutdown")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def live_with_a_blocked_write(
    hub: Hub,
) -> tuple[Socket, DeliveryQueue, Connection, asyncio.Task[None]]:
    """A live connection whose socket is full, and whose first write (`1;` at `1-0`) is parked."""
    socket = Socket()
    subscription, connection = await connect(hub, socket)
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    socket.full = True
    subscription.queue.push(b"1;", "1-0")
    connection.flush()  # suspends: parked for the task
    assert subscription.queue.writing
    return socket, subscription.queue, connection, task


async def test_a_blocked_write_is_finished_by_the_task_and_what_came_meanwhile_follows(hub: Hub) -> None:
    socket, queue, connection, task = await live_with_a_blocked_write(hub)
    queue.push(b"2;", "2-0")
    connection.flush()  # a write is under way: waits in the queue
    socket.drain()
    async with asyncio.timeout(1):
        while socket.chunks != [b"1;", b"2;"]:
            await asyncio.sleep(0.01)
    assert not queue.writing
    queue.close("shutdown")
    await task


async def test_over_the_bound_while_blocked_it_stalls_and_live_returns_to_catch_up(hub: Hub) -> None:
    socket, queue, _, task = await live_with_a_blocked_write(hub)
    for n in (2, 3, 4, 5):
        queue.push(b"%d;" % n, f"{n}-0")
    assert queue.state is State.STALLED
    socket.drain()
    async with asyncio.timeout(1):
        await task  # back to the caller, which catches up from history
    assert (socket.chunks, queue.catch_up()) == ([b"1;"], (queue.epoch, "1-0"))


async def test_a_socket_that_takes_nothing_is_cut_off_after_the_write_timeout(hub: Hub) -> None:
    _, queue, _, task = await live_with_a_blocked_write(hub)
    with pytest.raises(SubscriberCutOff):
        async with asyncio.timeout(2):
            await task
    assert queue.close_reason == "write-timeout"


async def test_the_tick_sends_a_heartbeat_after_the_idle_interval_only(hub: Hub) -> None:
    socket = Socket()
    subscription, connection = await connect(hub, socket)
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    start = connection.last_write
    connection.tick(start + 1.0)
    assert socket.chunks == []
    connection.tick(start + 2.0)
    assert socket.chunks == [b": ping\n\n"]
    assert connection.last_write == hub.clock.now
    subscription.queue.close("shutdown")
    await task


async def test_expired_credentials_are_told_then_the_stream_ends(hub: Hub) -> None:
    socket = Socket()
    loop_start = asyncio.get_running_loop().time()
    subscription, connection = await connect(hub, socket, expires_at=0.0)  # long past
    task = await run_live(connection, asyncio.get_running_loop().create_future())
    connection.tick(loop_start)
    assert socket.chunks == [b'event: error\ndata: {"reason":"token-expired"}\n\n']
    assert subscription.queue.state is State.LIVE
    connection.tick(loop_start + 1.0)
    assert subscription.queue.close_reason == "expired"
    async with asyncio.timeout(1):
        await task
