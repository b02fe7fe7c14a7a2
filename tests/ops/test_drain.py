"""The drain: refusing streams and readiness while draining, ending streams within the window (spread over
it, late ones included), metrics, and the signal chaining that makes SIGTERM and SIGQUIT both stop the server.
(The same under a real gunicorn, end to end: tests/deploy/test_gunicorn.py.)"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

from gateway.fanout.queue import State
from gateway.ops.drain import SWEEP_INTERVAL, Drain
from gateway.ops.metrics import PrometheusMetrics
from tests.ops.conftest import GatewayFactory, assert_told_to_reconnect, subscribe

STREAM = "/api/Todos/change-stream"


async def test_draining_refuses_streams_and_readiness_but_serves_rest(in_process: GatewayFactory) -> None:
    async with in_process() as (client, gateway):
        assert (await client.get("/readyz")).status_code == 200
        gateway.drain.begin()
        # EventSource gives up for good on a non-200: it gets a 200 that tells it to reconnect, and ends.
        reconnect = await client.get(STREAM, headers={"Accept": "text/event-stream"})
        assert_told_to_reconnect(reconnect, "shutting down")
        refused = await client.get(STREAM, headers={"Accept": "application/json"})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["statusCode"] == 503
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "shutting down" in ready.json()["problems"]["worker"]
        assert "gateway_draining 1.0" in (await client.get("/metrics")).text
        # In-flight and new REST requests still complete while the streams drain.
        assert (await client.post("/api/Todos", json={"title": "during the drain"})).status_code == 200
        assert (await client.get("/api/Todos")).status_code == 200


async def test_streams_end_within_the_window_spread_over_it(in_process: GatewayFactory) -> None:
    window = 0.8
    async with in_process(drain_seconds=window) as (_client, gateway):
        subscriptions = [await subscribe(gateway) for _ in range(40)]
        loop = asyncio.get_running_loop()
        closed_at: dict[int, float] = {}
        start = loop.time()
        gateway.drain.begin()
        while len(closed_at) < len(subscriptions) and loop.time() - start < window + 5:
            for n, subscription in enumerate(subscriptions):
                if n not in closed_at and subscription.queue.state is State.CLOSED:
                    closed_at[n] = loop.time() - start
            await asyncio.sleep(0.01)
        assert len(closed_at) == len(subscriptions)
        assert max(closed_at.values()) <= window + 1.0  # timers run late on a loaded box
        assert max(closed_at.values()) - min(closed_at.values()) >= window / 3  # not all at once
        assert {s.queue.close_reason for s in subscriptions} == {"shutdown"}
        for subscription in subscriptions:
            await gateway.hub.unsubscribe(subscription)


async def test_a_stream_registered_during_the_drain_is_ended_too(in_process: GatewayFactory) -> None:
    """A request that passed the refusal check just before the drain began registers after the streams were
    scheduled to end; the sweeper ends it once the window is over, so the worker can still exit."""
    window = 0.3
    async with in_process(drain_seconds=window) as (_client, gateway):
        gateway.drain.begin()
        late = await subscribe(gateway)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while late.queue.state is not State.CLOSED and loop.time() - start < window + SWEEP_INTERVAL + 5:
            await asyncio.sleep(0.02)
        assert late.queue.close_reason == "shutdown"
        assert loop.time() - start <= window + SWEEP_INTERVAL + 1.5
        await gateway.hub.unsubscribe(late)


class FakeHub:
    count = 0

    def close_all(self, reason: str, window: float) -> None:
        pass

    def subscribers(self) -> list[object]:
        return []


async def test_sigterm_and_sigquit_both_drain_and_stop_the_server() -> None:
    """The server's SIGTERM handler (uvicorn's) runs after ours for SIGTERM, and for SIGQUIT too: gunicorn's
    uvicorn worker would otherwise leave a SIGQUIT'd worker serving until it is SIGKILLed."""
    stops: list[int] = []

    def server_stop(signum: int, frame: FrameType | None) -> None:
        stops.append(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGQUIT)}
    signal.signal(signal.SIGTERM, server_stop)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    try:
        for sig in (signal.SIGQUIT, signal.SIGTERM):
            stops.clear()
            drain = Drain(FakeHub(), PrometheusMetrics(), 1.0)  # type: ignore[arg-type]
            drain.install()
            try:
                signal.raise_signal(sig)
                await asyncio.sleep(0.05)  # begin() runs on the loop
                assert drain.draining
                assert stops == [signal.SIGTERM]
            finally:
                await drain.aclose()
            assert signal.getsignal(signal.SIGTERM) is server_stop
            assert signal.getsignal(signal.SIGQUIT) == signal.SIG_DFL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def test_begin_is_idempotent_and_sets_the_metric() -> None:
    metrics = PrometheusMetrics()
    drain = Drain(FakeHub(), metrics, 0.1)  # type: ignore[arg-type]
    drain.begin()
    drain.begin()
    assert drain.draining
    assert b"gateway_draining 1.0" in metrics.render()
    await drain.aclose()
