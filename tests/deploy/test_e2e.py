"""The deployment end to end: real nginx (deploy/nginx.conf) in front of two gunicorn instances
(deploy/gunicorn.conf.py, two uvicorn workers each) on one Redis and one PostgreSQL.

200 followers behave like browsers' EventSource (reconnect on any end or error, with Last-Event-ID) while
writes flow through nginx. One instance is stopped gracefully (SIGTERM), restarted, then the other is killed
(SIGKILL to its whole process group) and restarted. Every follower must end up with every event of the
stream exactly once, in stream order, without ever seeing an error status, and the instances' /metrics
(aggregated over their workers) must count what the test did. The timings are written to
loadtests/reports/deploy-e2e.json for loadtests/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.conftest import Deployment, write_todo
from tests.deploy.harness import STREAM_PATH, Follower, GunicornInstance, ascrape, metric, poll, running
from tests.server import ROOT

FOLLOWERS = 200
BATCH = 10
WRITE_INTERVAL = 0.05
DRAIN_SECONDS = 3.0  # the deployment fixture's GATEWAY_DRAIN_SECONDS
REPORT = ROOT / "loadtests" / "reports" / "deploy-e2e.json"


class Writer:
    """Writes Todos through nginx at a steady pace until paused; remembers which writes succeeded."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url
        self.ok: list[int] = []
        self.failed = 0
        self._running = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def write(self, count: int) -> None:
        for _ in range(count):
            await self._one()

    async def _one(self) -> None:
        target = await write_todo(self._http, self._url, f"w{len(self.ok) + self.failed}")
        if target is None:
            self.failed += 1
        else:
            self.ok.append(target)

    def resume(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._running.set()

    async def pause(self) -> None:
        """Stop writing, and return once the write in flight (if any) has been answered."""
        self._running.clear()
        if self._task is not None:
            await self._idle.wait()

    async def _run(self) -> None:
        while True:
            if not self._running.is_set():
                self._idle.set()
                await self._running.wait()
            self._idle.clear()
            await self._one()
            await asyncio.sleep(WRITE_INTERVAL)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def totals(client: httpx.AsyncClient, *instances: GunicornInstance) -> dict[str, float]:
    """Counters and gauges summed over the given instances (each already sums its workers)."""
    texts = [await ascrape(instance.url, client) for instance in instances]

    def total(name: str) -> float:
        return sum(metric(text, name, model="Todo") for text in texts)

    return {
        "opened": total("gateway_stream_connections_opened_total"),
        "open": total("gateway_stream_connections"),
        "delivered": total("gateway_events_delivered_total"),
        "replayed": total("gateway_events_replayed_total"),
        "resets": total("gateway_stream_resets_total"),
        "draining": sum(metric(text, "gateway_draining") for text in texts),
    }


def resume_times(followers: list[Follower], moment: float) -> tuple[float, list[float]]:
    """(seconds from `moment` until the last follower had a new gateway stream, each follower's reconnect gap;
    the gap includes any empty "retry in 2 s" answers nginx gave while no instance could take the stream)."""
    latest = 0.0
    gaps: list[float] = []
    for follower in followers:
        ended = [
            c for c in follower.connections if c.gateway and c.ended_at is not None and c.ended_at >= moment
        ]
        assert ended, f"follower {follower.index} kept its stream across the restart"
        new = follower.connections_since(ended[0].ended_at or moment)
        assert new, f"follower {follower.index} did not reconnect"
        latest = max(latest, new[0].opened_at - moment)
        gaps.append(new[0].opened_at - (ended[0].ended_at or moment))
    return latest, gaps


@pytest.mark.timeout(240)
async def test_sigterm_and_sigkill_behind_nginx_lose_nothing(deployment: Deployment, tmp_path: Path) -> None:
    a = deployment.instance("a")
    b = deployment.instance("b")
    report: dict[str, Any] = {"followers": FOLLOWERS, "drain_seconds": DRAIN_SECONDS}
    with running(a, b), deployment.nginx([a.address, b.address]) as nginx:
        limits = httpx.Limits(max_connections=FOLLOWERS + 20, max_keepalive_connections=0)
        timeout = httpx.Timeout(30.0, read=60.0)
        async with (
            httpx.AsyncClient(limits=limits, timeout=timeout) as streams,
            httpx.AsyncClient(timeout=10.0) as http,
        ):
            loop = asyncio.get_running_loop()
            followers = [Follower(n, nginx.url + STREAM_PATH) for n in range(FOLLOWERS)]
            tasks = [asyncio.create_task(f.run(streams)) for f in followers]
            writer = Writer(http, nginx.url)
            try:
                await poll(lambda: all(f.live for f in followers), 60, "every follower to connect")
                await poll(
                    lambda: _opened(http, a, b, FOLLOWERS),
                    30,
                    "both instances to count the followers' streams",
                )

                # 0. Everyone live on one of the two instances: a batch is delivered once to each.
                await writer.write(BATCH)
                await poll(lambda: all(len(f.events) == BATCH for f in followers), 30, "the first batch")
                before = await totals(http, a, b)
                assert before == {
                    "opened": FOLLOWERS,
                    "open": FOLLOWERS,
                    "delivered": FOLLOWERS * BATCH,
                    "replayed": 0,
                    "resets": 0,
                    "draining": 0,
                }

                # 1. SIGTERM a while writes continue: its streams end over the drain window, reconnect
                # through nginx to b and resume there.
                writer.resume()
                await poll(lambda: len(writer.ok) >= 2 * BATCH, 30, "writes to flow")
                t_term = loop.time()
                a.signal(signal.SIGTERM)
                await poll(lambda: not a.running, DRAIN_SECONDS + 20, "a to exit after SIGTERM")
                report["sigterm_exit_s"] = round(loop.time() - t_term, 2)
                assert a.wait(0) == 0, a.log_tail()
                await poll(
                    lambda: _open_on(http, b, FOLLOWERS), 30, "every follower to stream from b after SIGTERM"
                )
                moved = [f for f in followers if any(c.gateway and c.ended_at for c in f.connections)]
                latest, gaps = resume_times(moved, t_term)
                ends = [
                    c.ended_at - t_term
                    for f in moved
                    for c in f.connections
                    if c.gateway and c.ended_at and c.ended_at >= t_term
                ]
                report["sigterm"] = {
                    "moved": len(moved),
                    "all_resumed_s": round(latest, 2),
                    "reconnect_gap_median_s": round(statistics.median(gaps), 3),
                    "reconnect_gap_max_s": round(max(gaps), 3),
                    "streams_ended_between_s": [round(min(ends), 2), round(max(ends), 2)],
                }
                assert len(moved) > FOLLOWERS / 4  # round robin put about half of them on a
                assert max(ends) <= DRAIN_SECONDS + 3.0  # ended within the window (+ a loaded box's lag)...
                assert max(ends) - min(ends) >= DRAIN_SECONDS / 3  # ...spread over it, not all at once
                after_term = await totals(http, b)
                assert after_term["open"] == FOLLOWERS
                assert after_term["resets"] == 0

                # 2. a comes back and is ready; then b dies at once (SIGKILL, whole process group): its
                # followers reconnect to a with their last event id, and a replays what they missed.
                await asyncio.to_thread(a.start)
                await _in_rotation(http, nginx.url, a)
                writes_at_kill = len(writer.ok)
                t_kill = loop.time()
                b.kill()
                await poll(
                    lambda: _open_on(http, a, FOLLOWERS), 30, "every follower to stream from a after SIGKILL"
                )
                latest, gaps = resume_times(followers, t_kill)
                report["sigkill"] = {
                    "moved": FOLLOWERS,
                    "all_resumed_s": round(latest, 2),
                    "reconnect_gap_median_s": round(statistics.median(gaps), 3),
                    "reconnect_gap_max_s": round(max(gaps), 3),
                }

                # 3. With writes paused, everyone catches up; then a batch on a alone is counted exactly.
                await poll(lambda: len(writer.ok) >= writes_at_kill + 2 * BATCH, 30, "writes after the kill")
                await writer.pause()
                entries = await _caught_up(deployment, followers, writer, http, a)
                counts = await totals(http, a)
                assert counts["opened"] == FOLLOWERS
                assert counts["open"] == FOLLOWERS
                assert counts["resets"] == 0
                await writer.write(BATCH)
                entries = await _caught_up(deployment, followers, writer, http, a)
                after = await totals(http, a)
                assert after["delivered"] - counts["delivered"] == FOLLOWERS * BATCH

                # 4. b restarts, is ready, and takes new streams through nginx again.
                await asyncio.to_thread(b.start)
                ready = await http.get(f"{b.url}/readyz")
                assert ready.status_code == 200, ready.text
                await _takes_streams(streams, nginx.url, http, b)
            finally:
                await writer.aclose()
                for follower in followers:
                    follower.stopping = True
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    # Every follower got every event of the stream once, in order, and never an error status or a reset.
    expected = [(f"{e.epoch}-{e.offset}", e.change.decode()) for e in entries]
    targets = Counter(json.loads(e.change)["target"] for e in entries)
    assert all(targets[target] == 1 for target in writer.ok), "a committed write is missing or doubled"
    lost = duplicates = 0
    for follower in followers:
        ids = [event_id for event_id, _ in follower.events]
        duplicates += len(ids) - len(set(ids))
        lost += len(set(expected) - set(follower.events))
        assert follower.events == expected, f"follower {follower.index} differs from the stream"
        assert follower.others == []
        assert set(follower.statuses) == {200}, f"follower {follower.index} saw {follower.statuses}"
    report.update(
        nginx_retry_answers=sum(1 for f in followers for c in f.connections if not c.gateway),
        events=len(expected),
        writes_ok=len(writer.ok),
        writes_failed=writer.failed,
        deliveries=sum(len(f.events) for f in followers),
        lost=lost,
        duplicates=duplicates,
        command="make test  (or: .venv/bin/pytest tests/deploy/test_e2e.py -s)",
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


async def _opened(http: httpx.AsyncClient, a: GunicornInstance, b: GunicornInstance, count: int) -> bool:
    return (await totals(http, a, b))["open"] == count


async def _open_on(http: httpx.AsyncClient, instance: GunicornInstance, count: int) -> bool:
    try:
        return (await totals(http, instance))["open"] == count
    except httpx.HTTPError:
        return False


async def _caught_up(
    deployment: Deployment,
    followers: list[Follower],
    writer: Writer,
    http: httpx.AsyncClient,
    *instances: GunicornInstance,
) -> list[Any]:
    """Wait until the relay published every successful write and every follower received the whole stream."""
    entries: list[Any] = []

    async def done() -> bool:
        nonlocal entries
        # Nothing left to publish first (a write that failed at the client may have committed and be
        # published late), then the stream: with writes paused, it cannot grow after that.
        if await deployment.unpublished():
            return False
        entries = await deployment.stream_entries()
        targets = {json.loads(e.change)["target"] for e in entries}
        return targets.issuperset(writer.ok) and all(len(f.events) == len(entries) for f in followers)

    try:
        await poll(done, 60, "every follower to receive the whole stream", interval=0.2)
    except AssertionError as exc:  # say which half failed: publishing or delivering
        targets = {json.loads(e.change)["target"] for e in entries}
        behind = [f for f in followers if len(f.events) != len(entries)]
        texts = [await ascrape(instance.url, http) for instance in instances]
        state = {
            name: [metric(text, name) for text in texts]
            for name in ("gateway_outbox_backlog", "gateway_relay_leases", "gateway_events_published_total")
        }
        raise AssertionError(
            f"{exc}: the stream has {len(entries)} entries; successful writes missing from it: "
            f"{sorted(set(writer.ok) - targets)[:20]}; followers by events received: "
            f"{dict(Counter(len(f.events) for f in followers))}; first behind: "
            f"{[(f.index, f.live, f.last_event_id, f.statuses[-3:], f.others[-3:]) for f in behind[:3]]}; "
            f"instances: {state}; unpublished: {await deployment.unpublished()}"
        ) from None
    return entries


async def _in_rotation(http: httpx.AsyncClient, url: str, instance: GunicornInstance) -> None:
    """Until nginx sends requests to `instance` again: after a failed connection it skips an upstream for
    `fail_timeout`, as a rolling restart waits for a new instance to be in rotation before stopping the next.
    (Probes are 404s, which nothing else in the test asks for.)"""

    async def served() -> bool:
        before = metric(await ascrape(instance.url, http), "gateway_http_requests_total", status="404")
        for _ in range(4):
            await http.get(f"{url}/api/Todos/999999999")
        return metric(await ascrape(instance.url, http), "gateway_http_requests_total", status="404") > before

    await poll(served, 30, f"nginx to send requests to {instance.name} again", interval=0.2)


async def _takes_streams(
    streams: httpx.AsyncClient, url: str, http: httpx.AsyncClient, instance: GunicornInstance
) -> None:
    """Open streams through nginx until one lands on `instance` (nginx may still skip it for fail_timeout)."""

    async def one() -> bool:
        async with streams.stream(
            "GET", url + STREAM_PATH, headers={"Accept": "text/event-stream"}
        ) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                if b":ok" in chunk:
                    break
            return (await totals(http, instance))["opened"] > 0

    await poll(one, 30, f"{instance.name} to take a new stream through nginx", interval=0.2)
