"""`SingleFlight`: concurrent callers share one call; a caller after it lands starts a new one; errors reach
every caller; a caller that is cancelled leaves the call to the others."""

from __future__ import annotations

import asyncio
import gc

from gateway.singleflight import SingleFlight


class Counted:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.calls


async def test_concurrent_callers_share_the_call_in_flight_and_later_ones_make_their_own() -> None:
    call = Counted()
    flight = SingleFlight(call)
    waiting = [asyncio.create_task(flight()) for _ in range(1000)]
    await asyncio.sleep(0)
    call.release.set()
    assert await asyncio.gather(*waiting) == [1] * 1000
    assert call.calls == 1
    assert await flight() == 2  # the first flight landed: a new one
    assert call.calls == 2


async def test_an_error_reaches_every_caller_of_its_flight() -> None:
    call = Counted()
    call.fail = ConnectionError("broker down")
    flight = SingleFlight(call)
    waiting = [asyncio.create_task(flight()) for _ in range(3)]
    await asyncio.sleep(0)
    call.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert call.calls == 1


async def test_a_cancelled_caller_leaves_the_flight_to_the_others() -> None:
    call = Counted()
    flight = SingleFlight(call)
    leaving = asyncio.create_task(flight())
    staying = asyncio.create_task(flight())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    call.release.set()
    assert await staying == 1
    assert leaving.cancelled()


async def test_a_failed_flight_that_every_caller_left_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        call = Counted()
        call.fail = ConnectionError("late")
        abandoned = asyncio.create_task(SingleFlight(call)())
        await asyncio.sleep(0)
        abandoned.cancel()
        call.release.set()
        await asyncio.sleep(0.01)
        del abandoned
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not [context for context in reported if "never retrieved" in str(context.get("message"))]
