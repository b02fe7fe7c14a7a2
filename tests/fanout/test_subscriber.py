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


def connected(sent: list[bytes], *, suspend: bool = False) -> Subscriber:
    """A live subscriber whose `send_body` records each write; with `suspend`, every write waits."""
    subscriber = Subscriber(max_events=3, max_bytes=100, replaying=False)

    async def send_body(data: bytes) -> None:
        sent.append(data)
        if suspend:
            await asyncio.get_running_loop().create_future()

    subscriber.send_body = send_body
    return subscriber


async def test_a_batch_larger_than_the_bound_goes_out_in_pieces() -> None:
    sent: list[bytes] = []
    subscriber = connected(sent)
    for n in range(10):
        assert subscriber.push(b"%d;" % n, f"{n + 1}-0")
    subscriber.flush(0.0)
    assert sent == [b"0;1;2;", b"3;4;5;", b"6;7;8;", b"9;"]
    assert subscriber.state is State.LIVE
    assert (subscriber.delivered_offset, subscriber.last_offset) == ("10-0", "10-0")


async def test_a_frame_bigger_than_the_bound_alone_is_still_delivered() -> None:
    sent: list[bytes] = []
    subscriber = connected(sent)
    assert subscriber.push(b"x" * 500, "1-0")
    subscriber.flush(0.0)
    assert sent == [b"x" * 500]


async def test_over_the_bound_while_a_write_waits_it_stalls_and_catches_up_from_what_was_written() -> None:
    sent: list[bytes] = []
    stalls: list[None] = []
    subscriber = connected(sent, suspend=True)
    subscriber.on_stall = lambda: stalls.append(None)
    subscriber.epoch = "e"
    assert subscriber.push(b"1;", "1-0")
    subscriber.flush(0.0)  # this write waits for the client
    assert subscriber.blocked is not None
    for n in (2, 3, 4):
        assert subscriber.push(b"%d;" % n, f"{n}-0")
    assert not subscriber.push(b"5;", "5-0")  # one more than the bound, while a write waits
    assert (subscriber.state, subscriber.buffer, len(stalls)) == (State.STALLED, [], 1)
    assert subscriber.needs_task()
    assert not subscriber.push(b"6;", "6-0")  # out of live fan-out: nothing is kept
    assert subscriber.catch_up() == ("e", "1-0")  # the frames it dropped are read from history
    assert not subscriber.push(b"7;", "7-0")  # held back while it replays
    assert subscriber.go_live("6-0") == 1  # the replay sent up to 6
    assert subscriber.buffer == [b"7;"]
    assert subscriber.blocked is not None
    subscriber.blocked[0].close()
