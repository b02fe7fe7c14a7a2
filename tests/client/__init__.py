"""Tests of the change-stream clients (`gateway.streams`, `gateway.client.remote`, `gateway tail`), and the
helpers their modules share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.streams import Change, Reset, StreamItem
from tests.polling import eventually as eventually  # re-exported for the tests of this package


async def take(stream: AsyncIterator[StreamItem], changes: int, *, within: float = 20.0) -> list[StreamItem]:
    """Items from `stream` until `changes` `Change`s have arrived (resets included); fails on timeout."""
    items: list[StreamItem] = []
    async with asyncio.timeout(within):
        while sum(isinstance(item, Change) for item in items) < changes:
            items.append(await anext(stream))
    return items


def changes_of(items: list[StreamItem]) -> list[dict[str, Any]]:
    return [item.change for item in items if isinstance(item, Change)]


def resets_of(items: list[StreamItem]) -> list[Reset]:
    return [item for item in items if isinstance(item, Reset)]


async def post(client: httpx.AsyncClient, path: str, body: Any) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def patch(client: httpx.AsyncClient, path: str, body: Any) -> Any:
    response = await client.patch(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


class Writer:
    """Creates Todos one after another until stopped, riding out a gateway that is down or restarting.

    `acked` holds the ids the gateway confirmed. A create whose reply was lost (the gateway was killed
    mid-request) may still have committed, so the database, not `acked`, is the record of what was written.
    """

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=5.0)
        self.acked: list[int] = []
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self._run(), name="writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self._client.aclose()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def wait_for(self, count: int, within: float = 30.0) -> None:
        """Until `count` more creates have been confirmed."""
        target = len(self.acked) + count

        async def reached() -> bool:
            return len(self.acked) >= target

        await eventually(reached, within=within, what=f"{count} more confirmed writes")

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                response = await self._client.post("/api/Todos", json={"title": f"w{n}", "priority": n})
            except httpx.TransportError:
                self.failures += 1
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                self.acked.append(response.json()["id"])
            else:  # 503 while draining
                self.failures += 1
                await asyncio.sleep(0.05)
