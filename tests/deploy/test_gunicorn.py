"""The graceful drain inside real gunicorn + uvicorn workers (deploy/gunicorn.conf.py).

On SIGTERM (an orchestrator's stop) and SIGQUIT (gunicorn's quick stop, which the uvicorn worker alone would
ignore until SIGKILL), every worker ends its streams spread over the drain window, releases its relay lease
at once (another instance need not wait for it to expire), logs each stream's close with its reason, and the
instance exits cleanly well before gunicorn's graceful timeout. /metrics adds up all the workers, whichever
of them answers the scrape.
"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest

from tests.deploy.conftest import STREAM, Deployment
from tests.deploy.harness import STREAM_PATH, metric, poll, scrape

STREAMS = 24
DRAIN = 2.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["SIGTERM", "SIGQUIT"])
async def test_every_worker_drains_hands_its_lease_over_and_exits(deployment: Deployment, sig: int) -> None:
    # A long lease: if it were not released on shutdown, taking it over would fail for 30 s.
    instance = deployment.instance("solo", workers=2, drain_seconds=str(DRAIN), lease_ttl="30")
    await asyncio.to_thread(instance.start)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, read=60.0), limits=httpx.Limits(max_connections=50)
    ) as client:
        ended: list[float] = []
        loop = asyncio.get_running_loop()

        async def follow() -> None:
            async with client.stream(
                "GET", instance.url + STREAM_PATH, headers={"Accept": "text/event-stream"}
            ) as response:
                assert response.status_code == 200
                async for _ in response.aiter_raw():
                    pass
            ended.append(loop.time())

        followers = [asyncio.create_task(follow()) for _ in range(STREAMS)]
        try:
            # Every scrape, whichever worker answers it, counts the streams of both workers.

            async def counted() -> bool:
                text = await asyncio.to_thread(scrape, instance.url)
                return metric(text, "gateway_stream_connections", model=STREAM) == STREAMS

            await poll(counted, 30, "the streams to be counted")
            for _ in range(6):
                text = await asyncio.to_thread(scrape, instance.url)
                assert metric(text, "gateway_stream_connections", model=STREAM) == STREAMS
                assert metric(text, "gateway_relay_leases") == 1  # one worker publishes the stream
            signaled = loop.time()
            instance.signal(sig)
            async with asyncio.timeout(DRAIN + 10):
                await asyncio.gather(*followers)
            returncode = await asyncio.to_thread(instance.wait, 20)
            exited = loop.time() - signaled
        finally:
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)

    assert returncode == 0, instance.log_tail()
    offsets = sorted(moment - signaled for moment in ended)
    assert offsets[-1] <= DRAIN + 3.0  # every stream ended within the window (plus a loaded box's lag)...
    assert offsets[-1] - offsets[0] >= DRAIN / 3  # ...at moments spread over it
    assert exited < DRAIN + 9  # nothing waited for gunicorn's graceful timeout (17 s) or a SIGKILL
    lease = await deployment.broker.acquire_lease(STREAM, "next-holder", 5.0)
    assert lease is not None, "the relay lease was not handed over on shutdown"
    await deployment.broker.release_lease(lease)

    lines = [json.loads(line) for line in instance.log_path.read_text().splitlines() if line.startswith("{")]
    closes = [line for line in lines if line.get("msg") == "stream close"]
    assert len(closes) == STREAMS
    assert {line["reason"] for line in closes} == {"shutdown"}
    assert all(len(line["request_id"]) == 32 for line in closes)
    assert sum(1 for line in lines if line.get("msg") == "draining") == 2  # both workers
    assert not [line for line in lines if line["level"] in ("error", "critical")]
