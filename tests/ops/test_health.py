"""Liveness, readiness (with its reasons and the worker's stream count) and a full worker."""

from __future__ import annotations

from tests.ops.conftest import GatewayFactory, assert_told_to_reconnect, subscribe


async def test_healthz_and_readyz(in_process: GatewayFactory) -> None:
    async with in_process(max_connections=5) as (client, _gateway):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "problems": {}, "streams": {"open": 0, "max": 5}}


async def test_a_full_worker_is_not_ready_and_refuses_streams(in_process: GatewayFactory) -> None:
    async with in_process(max_connections=1) as (client, gateway):
        held = await subscribe(gateway)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert "maximum of 1 streams" in body["problems"]["worker"]
        assert body["streams"] == {"open": 1, "max": 1}
        reconnect = await client.get("/api/Todos/change-stream", headers={"Accept": "text/event-stream"})
        assert_told_to_reconnect(reconnect, "maximum of 1 streams")
        refused = await client.get("/api/Todos/change-stream", headers={"Accept": "application/json"})
        assert refused.status_code == 503
        assert "Retry-After" in refused.headers
        assert (await client.get("/api/Todos")).status_code == 200  # REST is still served
        await gateway.hub.unsubscribe(held)
        assert (await client.get("/readyz")).status_code == 200


async def test_an_unreachable_dependency_is_named(in_process: GatewayFactory) -> None:
    async with in_process(broker_url="redis://127.0.0.1:1/0") as (client, _gateway):
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert set(ready.json()["problems"]) == {"broker"}
