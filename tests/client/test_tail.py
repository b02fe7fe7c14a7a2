"""`gateway tail` as a user runs it: a subprocess next to a real gateway, compared with the SSE stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.client.sse import SSEParser
from tests.client import post
from tests.client.conftest import GatewayFactory
from tests.conftest import EXAMPLE_MODELS
from tests.polling import eventually
from tests.security.conftest import NOTE, SECRET, make_token
from tests.server import ROOT, free_port


@dataclass
class Finished:
    code: int
    out: bytes
    err: str

    @property
    def lines(self) -> list[bytes]:
        return self.out.splitlines()


def tail_env(broker_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_BROKER_URL": broker_url,
        "GATEWAY_REDIS_PREFIX": prefix,
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "PYTHONFAULTHANDLER": "1",  # a tail that hangs shows its threads' stacks when `finish` aborts it
        **extra,
    }


def _interruptible() -> None:
    """In the child before exec: SIGINT at its default, as in a terminal's foreground process. A runner
    started in the background by a non-interactive shell (`make test &`, some CI) ignores SIGINT, the tail
    inherited that, and the test's Ctrl-C never reached it: the hang seen on busy boxes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def start_tail(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "tail",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_interruptible,
    )


PROCESS_DEADLINE = 90.0
"""Seconds a tail process gets to start, print or exit: generous, so that only a real hang fails; `finish`
aborts a hung tail with its stacks printed."""


async def finish(process: asyncio.subprocess.Process, within: float = PROCESS_DEADLINE) -> Finished:
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack to stderr
        out, err = await process.communicate()
        raise AssertionError(f"tail did not finish within {within} s: {out!r} {err.decode()}") from None
    assert process.returncode is not None
    return Finished(process.returncode, out, err.decode())


async def run_tail(env: dict[str, str], *args: str, within: float = PROCESS_DEADLINE) -> Finished:
    return await finish(await start_tail(env, *args), within)


class SSEReader:
    """A change stream read with the SSE parser: data events as (id, data bytes), and the last event id."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_raw()
        self.parser = SSEParser()
        self.events: list[tuple[str, bytes]] = []

    async def read_until(self, *, position: str | None = None, events: int = 0, within: float = 20.0) -> None:
        """Until the last event id is `position` (or any id, when None) and `events` data events arrived."""
        async with asyncio.timeout(within):
            while (
                not self.parser.last_event_id
                or (position is not None and self.parser.last_event_id != position)
                or len(self.events) < events
            ):
                for event in self.parser.feed(await anext(self._chunks)):
                    if event.event == "data":
                        self.events.append((event.last_event_id, event.data.encode()))


def as_tail_line(event_id: str, data: bytes) -> bytes:
    """What `gateway tail` prints for an SSE data event: the change object with its position first."""
    return b'{"position":"' + event_id.encode() + b'",' + data[1:]


async def test_tail_count_prints_the_sse_streams_changes_over_http_and_from_the_broker(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    options = {"where": {"done": False}, "fields": ["title", "done"]}
    env = tail_env(redis_url, redis_prefix)
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client,
        client.stream("GET", "/api/Todos/change-stream") as all_response,
        client.stream(
            "GET", "/api/Todos/change-stream", params={"options": json.dumps(options)}
        ) as undone_response,
    ):
        everything, undone = SSEReader(all_response), SSEReader(undone_response)
        await everything.read_until()  # the opening bookmark: the position before the writes
        await undone.read_until()
        start = everything.parser.last_event_id
        filtered = ("--where", '{"done": false}', "--fields", "title,done")
        tails = {
            ("url", "all"): await start_tail(
                env, "Todo", "--url", gateway.url, "--from", start, "--count", "7"
            ),
            ("broker", "all"): await start_tail(env, "Todos", "--from", start, "--count", "7"),
            ("url", "undone"): await start_tail(
                env, "Todo", "--url", gateway.url, "--from", start, "--count", "6", *filtered
            ),
            ("broker", "undone"): await start_tail(env, "Todo", "--from", start, "--count", "6", *filtered),
        }

        a = await post(client, "/api/Todos", {"title": "a", "priority": 1})
        b = await post(client, "/api/Todos", {"title": "b", "done": True})
        await client.patch(f"/api/Todos/{b['id']}", json={"done": False})  # b enters the filter
        await client.patch(f"/api/Todos/{a['id']}", json={"done": True})  # a leaves it
        await client.put(f"/api/Todos/{a['id']}", json={"title": "a2"})  # a comes back (done: default)
        updated = await client.post(
            "/api/Todos/update", params={"where": json.dumps({"id": a["id"]})}, json={"priority": 5}
        )
        assert updated.json() == {"count": 1}
        await client.delete(f"/api/Todos/{b['id']}")

        await everything.read_until(events=7)
        last = everything.events[-1][0]
        await undone.read_until(position=last)  # a bookmark or its last event: it has seen every write
        assert len(everything.events) == 7
        assert len(undone.events) == 6

        results = {key: await finish(process) for key, process in tails.items()}
    for (mode, which), result in results.items():
        assert (result.code, result.err) == (0, ""), (mode, which, result.err)
        events = everything.events if which == "all" else undone.events
        assert result.lines == [as_tail_line(event_id, data) for event_id, data in events], (mode, which)


@pytest.mark.timeout(4 * PROCESS_DEADLINE)
async def test_tail_follows_until_interrupted_and_exits_quietly(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    env = tail_env(redis_url, redis_prefix)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        start = (await client.get("/api/Todos/count")).headers["X-Change-Stream-Position"]
        over_http = await start_tail(env, "Todo", "--url", gateway.url, "--from", start)
        from_broker = await start_tail(env, "Todo", "--from", start)
        try:
            a = await post(client, "/api/Todos", {"title": "a"})
            for process in (over_http, from_broker):
                assert process.stdout is not None
                line = await asyncio.wait_for(process.stdout.readline(), PROCESS_DEADLINE)
                printed = json.loads(line)
                assert printed.pop("position").startswith(start.split("-")[0])
                assert printed == {"target": a["id"], "data": a, "type": "create"}
        finally:
            over_http.send_signal(signal.SIGINT)  # Ctrl-C
            from_broker.send_signal(signal.SIGTERM)
            interrupted = await finish(over_http)
            terminated = await finish(from_broker)
    assert (interrupted.code, interrupted.out, interrupted.err) == (0, b"", "")
    assert (terminated.code, terminated.out, terminated.err) == (0, b"", "")


async def test_tail_errors_are_clear_and_non_zero(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix)
    env = tail_env(redis_url, redis_prefix)
    closed = f"http://127.0.0.1:{free_port()}"
    cases = {
        "unknown model, broker": (
            env,
            ("Nope",),
            2,
            "there is no model 'Nope'; the models are: Todo (Todos)",
        ),
        "unknown model, http": (
            env,
            ("Nope", "--url", gateway.url),
            2,
            f"the gateway at {gateway.url} serves no model 'Nope'; it serves: Todo (Todos)",
        ),
        "unreachable gateway": (env, ("Todo", "--url", closed), 1, f"cannot reach the gateway at {closed}"),
        "unreachable broker": (
            tail_env(f"redis://127.0.0.1:{free_port()}/0", redis_prefix),
            ("Todo",),
            1,
            "cannot read the broker at redis://127.0.0.1:",
        ),
        "memory broker": (
            tail_env("memory://", redis_prefix),
            ("Todo",),
            2,
            "the embedded memory:// broker lives inside the serving process",
        ),
        "bad where, broker": (env, ("Todo", "--where", '{"nope": 1}'), 2, "--where/--fields:"),
        "bad where, http": (env, ("Todo", "--url", gateway.url, "--where", '{"nope": 1}'), 2, "400"),
        "where not JSON": (env, ("Todo", "--where", "done"), 2, "--where is not valid JSON"),
        "bad position": (env, ("Todo", "--from", "yesterday"), 2, "not a stream position: 'yesterday'"),
    }
    results = await asyncio.gather(*(run_tail(case_env, *args) for case_env, args, _, _ in cases.values()))
    for (name, (_, _, code, message)), result in zip(cases.items(), results, strict=True):
        assert result.code == code, (name, result.err)
        assert result.out == b"", name
        assert message in result.err, (name, result.err)
        assert "Traceback" not in result.err, (name, result.err)


async def test_tail_over_http_sends_a_token_from_the_environment(
    gateways: GatewayFactory, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "note.json").write_text(json.dumps(NOTE))  # only its owner (or an admin) reads a note
    secured = {"GATEWAY_AUTH_JWT_SECRET": SECRET, "GATEWAY_MODELS": str(models)}
    gateway = await gateways(redis_url=redis_url, prefix=redis_prefix, **secured)
    env = tail_env(redis_url, redis_prefix, GATEWAY_MODELS=str(models))
    refused = await run_tail(env, "Note", "--url", gateway.url, "--count", "1")
    assert refused.code == 2
    assert "401" in refused.err
    token = make_token("alice")
    follower = await start_tail({**env, "GATEWAY_TOKEN": token}, "Note", "--url", gateway.url, "--count", "1")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        headers = {"Authorization": f"Bearer {token}"}

        async def written() -> bool:
            await client.post("/api/Notes", json={"title": "mine"}, headers=headers)
            return follower.returncode is not None

        await eventually(written, within=20, what="tail printed a change")
    result = await finish(follower)
    assert result.code == 0, result.err
    assert json.loads(result.lines[0])["data"]["title"] == "mine"
