"""The hub's readers under failure: a cancelled starter and a reader that dies must not strand anyone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.broker.base import Record, StreamHead
from gateway.broker.memory import MemoryBroker
from gateway.fanout import reader as reader_module
from gateway.fanout.hub import Hub, HubSettings
from gateway.fanout.queue import State
from gateway.models.loader import load_registry
from gateway.ops.metrics import PrometheusMetrics
from gateway.sse.frames import Format
from tests.conftest import EXAMPLE_MODELS

TODO = load_registry(EXAMPLE_MODELS).by_name["Todo"]
KEY = (Format.SSE, "None", "None")


class GatedBroker(MemoryBroker):
    """`head()` waits for the test to open the gate, so a starter can be cancelled mid-start."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def head(self, stream: str) -> StreamHead:
        await self.gate.wait()
        return await super().head(stream)


@pytest.fixture
async def broker() -> AsyncIterator[GatedBroker]:
    broker = GatedBroker()
    yield broker
    await broker.aclose()


async def test_a_cancelled_starter_does_not_strand_the_others(broker: GatedBroker) -> None:
    hub = Hub(broker, HubSettings(), PrometheusMetrics())
    first = asyncio.create_task(hub.subscribe(TODO, KEY, lambda: None, None, replaying=False))
    second = asyncio.create_task(hub.subscribe(TODO, KEY, lambda: None, None, replaying=False))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    broker.gate.set()
    async with asyncio.timeout(5):
        subscription = await second
    assert first.cancelled()
    assert hub.count == 1
    await hub.unsubscribe(subscription)
    await hub.aclose()


async def test_a_reader_that_dies_ends_its_streams_and_is_replaced(
    broker: GatedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.gate.set()
    hub = Hub(broker, HubSettings(), PrometheusMetrics())
    subscription = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False)

    def broken(_entry: object) -> object:
        raise RuntimeError("a bug in the fan-out")

    monkeypatch.setattr(reader_module, "DecodedEntry", broken)
    lease = await broker.acquire_lease("Todo", "test", 10)
    assert lease is not None
    await broker.append("Todo", [Record(1, b'{"target":1,"type":"create"}', None, 0.0)], lease=lease)
    queue = subscription.queue
    woken = asyncio.Event()

    class Woken:
        def flush(self) -> None:
            return None

        def wake(self) -> None:
            woken.set()

        def stalled(self) -> None:
            return None

        def tick(self, now: float) -> None:
            return None

    queue.outlet = Woken()

    async def connection_idling() -> None:  # only the queue's close can wake it
        await woken.wait()

    connection = asyncio.create_task(connection_idling())
    async with asyncio.timeout(5):
        await connection
    assert (subscription.queue.state, subscription.queue.close_reason) == (
        State.CLOSED,
        "reader-failed",
    )
    monkeypatch.undo()
    fresh = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False)
    assert fresh.reader is not subscription.reader
    await hub.unsubscribe(subscription)
    await hub.unsubscribe(fresh)
    await hub.aclose()


async def test_deliveries_count_only_frames_queued_for_a_client(broker: GatedBroker) -> None:
    """A resuming subscriber's held-back frames count when `go_live` queues them, not when they arrive:
    those the replay already sent are dropped then, and were counted as replayed."""
    broker.gate.set()
    metrics = PrometheusMetrics()
    hub = Hub(broker, HubSettings(), metrics)
    live = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False)
    resuming = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=True)
    lease = await broker.acquire_lease("Todo", "test", 10)
    assert lease is not None
    records = [Record(n, b'{"target":%d,"type":"create"}' % n, None, 0.0) for n in (1, 2, 3)]
    offsets = await broker.append("Todo", records, lease=lease)

    def delivered() -> float | None:
        return metrics.registry.get_sample_value("gateway_events_delivered_total", {"model": "Todo"})

    async with asyncio.timeout(5):
        while delivered() != 3:  # the live subscriber's three, and none of the held-back ones
            await asyncio.sleep(0.01)
    assert len(resuming.queue.pending) == 3
    assert resuming.queue.go_live(offsets[0]) == 2  # the replay sent the first
    assert resuming.queue.push(b"data: 4\n\n", "9999999999999-0") is True
    await hub.unsubscribe(live)
    await hub.unsubscribe(resuming)
    await hub.aclose()
