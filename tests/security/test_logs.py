"""Credentials never reach the logs: not from headers, cookies, query strings, nor error messages."""

from __future__ import annotations

import logging

import pytest

from gateway.ops.logs import JsonFormatter, TextFormatter
from tests.security.conftest import GatewayFactory, bearer, make_token


async def test_tokens_and_tickets_are_absent_from_log_output(
    secured: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    token = make_token("alice")
    expired = make_token("alice", ttl=-100)
    with caplog.at_level(logging.DEBUG):
        async with secured(auth_allow_query_token=True) as (client, _):
            ticket = (
                await client.post("/auth/stream-ticket", json={"model": "Note"}, headers=bearer(token))
            ).json()["ticket"]
            await client.post("/auth/session", headers=bearer(token))
            await client.get("/api/Notes", headers=bearer(token))
            await client.get("/api/Notes", headers=bearer(expired))
            await client.get("/api/Notes", headers={"Cookie": f"gateway_token={token}"})
            await client.get("/api/Notes", params={"access_token": token, "filter": "{}"})
            await client.get("/api/Notes", params={"access_token": expired})
            await client.get("/api/Notes/change-stream", params={"ticket": "x" * 43})
            await client.post("/api/Notes", json={"title": "t"}, headers=bearer(token))
    # Formatted as production formats them, structured fields included.
    formatter, texts = JsonFormatter(), TextFormatter()
    # (The test's own httpx client logs the URLs it requests; only the server's lines count.)
    ours = [r for r in caplog.records if r.name.startswith(("gateway", "uvicorn", "starlette", "fastapi"))]
    text = "\n".join(formatter.format(r) + texts.format(r) for r in ours)
    assert "gateway.access" in text  # the request log did run
    assert "[redacted]" in text
    for secret in (token, expired, ticket, "x" * 43):
        assert secret not in text
        assert secret.split(".")[-1] not in text  # not even the signature
