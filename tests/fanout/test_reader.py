"""The stream reader's fan-out: whole runs per connection, and registration between two slices of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.broker.base import Entry, Lease, Record
from gateway.broker.memory import MemoryBroker
from gateway.fanout import reader as reader_module
from gateway.fanout.batch import Batch
from gateway.fanout.hub import Hub, HubSettings, Subscription
from gateway.fanout.queue import DeliveryQueue
from gateway.models.loader import load_registry
from gateway.ops.metrics import PrometheusMetrics
from gateway.sse.frames import Format
from tests.conftest import EXAMPLE_MODELS

TODO = load_registry(EXAMPLE_MODELS).by_name["Todo"]
KEY = (Format.SSE, "None", "None")


class Socket:
    """Stands in for an idle live connection whose socket takes everything at once."""

    def __init__(self, queue: DeliveryQueue, written: list[Socket]) -> None:
        self.queue = queue
        self.data = b""
        self._written = written  # every socket, in the order they were written to
        queue.outlet = self

    def write_now(self, batch: Batch) -> bool:
        self.data += batch.body
        self._written.append(self)
        return True

    def flush(self) -> None:
        if self.queue.buffer:
            self.data += self.queue.take()
            self._written.append(self)

    def wake(self) -> None:
        return None

    def stalled(self) -> None:
        return None

    def tick(self, now: float) -> None:
        return None


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    await broker.aclose()


async def append(broker: MemoryBroker, lease: Lease, targets: list[int]) -> list[str]:
    records = [Record(t, b'{"target":%d,"type":"create"}' % t, None, 0.0) for t in targets]
    return await broker.append("Todo", records, lease=lease)


def frames_of(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.startswith(b"data: ")]


async def test_a_subscriber_registering_between_two_slices_gets_none_of_the_run_and_all_after(
    broker: MemoryBroker,
) -> None:
    """The run's writes yield to the loop every `SLICE` connections. A subscriber that registers there
    starts after the whole run (no partial run, and the next entry with no gap or duplicate), and every
    subscriber registered before gets the whole run exactly once."""
    hub = Hub(broker, HubSettings(), PrometheusMetrics())
    written: list[Socket] = []
    subscriptions = [
        await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False)
        for _ in range(2 * reader_module.SLICE + 1)
    ]
    sockets = [Socket(s.queue, written) for s in subscriptions]
    late: list[tuple[Subscription, int, bool]] = []

    async def register_mid_run() -> None:
        while not written:
            await asyncio.sleep(0)
        subscription = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False)
        late.append((subscription, len(written), subscription.reader.dispatching))

    lease = await broker.acquire_lease("Todo", "test", 10)
    assert lease is not None
    registering = asyncio.create_task(register_mid_run())
    run = await append(broker, lease, [1, 2, 3])
    async with asyncio.timeout(5):
        await registering
        while len(written) < len(sockets):
            await asyncio.sleep(0.01)
    subscription, written_before, dispatching = late[0]
    assert 0 < written_before < len(sockets)  # it really registered halfway through
    assert dispatching
    assert subscription.start_offset == run[-1]
    expected = [b'data: {"target":%d,"type":"create"}' % t for t in (1, 2, 3)]
    assert all(frames_of(s.data) == expected for s in sockets)
    assert len(written) == len(sockets)  # one write each
    late_socket = Socket(subscription.queue, written)
    assert (late_socket.data, subscription.queue.buffer) == (b"", [])

    await append(broker, lease, [4])
    async with asyncio.timeout(5):
        while not late_socket.data:
            await asyncio.sleep(0.01)
    assert frames_of(late_socket.data) == [b'data: {"target":4,"type":"create"}']
    for s in [*subscriptions, subscription]:
        await hub.unsubscribe(s)
    await hub.aclose()


class ReadWatchingBroker(MemoryBroker):
    """Says when a blocking read returned entries, so a test can write while the reader lingers."""

    def __init__(self) -> None:
        super().__init__()
        self.returned = asyncio.Event()

    async def wait(self, stream: str, after: str, count: int, timeout: float) -> list[Entry]:
        entries = await super().wait(stream, after, count, timeout)
        if entries:
            self.returned.set()
        return entries


async def test_after_a_costly_dispatch_entries_written_while_the_reader_lingers_share_one_write() -> None:
    broker = ReadWatchingBroker()
    hub = Hub(broker, HubSettings(), PrometheusMetrics())
    subscription = await hub.subscribe(TODO, KEY, lambda: None, None, replaying=False)
    written: list[Socket] = []
    socket = Socket(subscription.queue, written)
    subscription.reader.linger = 1.0  # as after a dispatch that took the loop a second
    lease = await broker.acquire_lease("Todo", "test", 10)
    assert lease is not None
    await append(broker, lease, [1])
    async with asyncio.timeout(5):
        await broker.returned.wait()
        await append(broker, lease, [2])  # while the reader lingers
        while not written:
            await asyncio.sleep(0.01)
    assert frames_of(socket.data) == [b'data: {"target":%d,"type":"create"}' % t for t in (1, 2)]
    assert len(written) == 1
    assert subscription.reader.linger < 1.0  # the next one waits as long as this cheap dispatch took
    await hub.unsubscribe(subscription)
    await hub.aclose()
    await broker.aclose()
