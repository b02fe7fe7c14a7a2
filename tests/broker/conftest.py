"""Broker fixtures: a factory parametrised over both implementations, and private Redis servers.

`make_broker` runs each test that uses it once per implementation (ids `memory` and `redis`); the Redis one
keeps its keys under the test's own `redis_prefix` on the shared Redis. Every broker made is closed after the
test. Tests that stop, restart or flush Redis use `redis_servers` instead, which starts private servers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from gateway.broker.base import Broker
from gateway.broker.factory import broker_from_url
from gateway.broker.memory import MemoryBroker


class BrokerFactory(Protocol):
    def __call__(self, *, stream_maxlen: int | None = 200) -> Broker: ...


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str] | None:
    """None for the memory broker; the shared Redis URL and this test's key prefix for the Redis one.

    A plain fixture, so that it may resolve the async `redis_prefix` only when the Redis broker is wanted.
    """
    if request.param == "memory":
        return None
    return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")


@pytest.fixture
async def make_broker(backend: tuple[str, str] | None) -> AsyncIterator[BrokerFactory]:
    """A factory of brokers of one implementation (small default maxlen so trimming is cheap to reach)."""
    made: list[Broker] = []

    def make(*, stream_maxlen: int | None = 200) -> Broker:
        if backend is None:
            broker: Broker = MemoryBroker(stream_maxlen=stream_maxlen)
        else:
            url, prefix = backend
            broker = broker_from_url(url, prefix=prefix, stream_maxlen=stream_maxlen)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.aclose()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> Broker:
    return make_broker()
