"""`Subscriber.idle()`: how the hub wakes a connection task that idles in `receive`, and only that."""

from __future__ import annotations

import asyncio

import pytest

from gateway.fanout.subscriber import State, Subscriber


def live_subscriber() -> Subscriber:
    return Subscriber(max_events=10, max_bytes=10_000, replaying=False)


async def idle_in(subscriber: Subscriber, receive: asyncio.Future[str]) -> str | None:
    """What a connection does in `_live`: idle in `receive`, return what it brought (None if woken)."""
    message = None
    with subscriber.idle():
        message = await receive
    return message


async def test_a_frame_for_a_connection_that_is_not_writing_yet_wakes_its_task() -> None:
    subscriber = live_subscriber()
    task = asyncio.create_task(idle_in(subscriber, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    subscriber.push(b"data: 1\n\n", "1-0")  # no `send_body` yet: the task must write it
    async with asyncio.timeout(1):
        assert await task is None
    assert subscriber.needs_task()
    assert not task.cancelled()
    assert task.cancelling() == 0


async def test_closing_wakes_the_idle_task() -> None:
    subscriber = live_subscriber()
    task = asyncio.create_task(idle_in(subscriber, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    subscriber.close("shutdown")
    async with asyncio.timeout(1):
        assert await task is None
    assert subscriber.state is State.CLOSED


async def test_the_disconnect_comes_through_when_nothing_wakes_it() -> None:
    subscriber = live_subscriber()
    receive = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(idle_in(subscriber, receive))
    await asyncio.sleep(0)
    receive.set_result("http.disconnect")
    async with asyncio.timeout(1):
        assert await task == "http.disconnect"


async def test_a_wake_after_the_message_arrived_loses_only_that_message() -> None:
    subscriber = live_subscriber()
    receive = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(idle_in(subscriber, receive))
    await asyncio.sleep(0)
    receive.set_result("http.disconnect")  # the task is now scheduled, not yet run
    subscriber.close("shutdown")
    async with asyncio.timeout(1):
        assert await task is None  # uvicorn's next `receive` repeats a disconnect
    assert task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_goes_on() -> None:
    subscriber = live_subscriber()
    task = asyncio.create_task(idle_in(subscriber, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_elsewhere_during_a_wake_goes_on() -> None:
    subscriber = live_subscriber()
    task = asyncio.create_task(idle_in(subscriber, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    subscriber.close("shutdown")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_connection_busy_writing_is_not_interrupted() -> None:
    subscriber = live_subscriber()
    subscriber.push(b"data: 1\n\n", "1-0")
    assert subscriber.needs_task()
    subscriber.take()
    subscriber.push(b"data: 2\n\n", "2-0")  # nobody idles: nothing to cancel, nothing raised
    assert subscriber.take() == b"data: 2\n\n"
