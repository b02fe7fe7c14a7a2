"""The request log middleware: correlation ids in and out, one line per request, open/close lines per stream
with the right close reason, redaction, metrics, and a hot path that adds no coroutine per write."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Callable

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.ops.logs import ACCESS_LOGGER
from gateway.ops.metrics import PrometheusMetrics
from gateway.ops.requestlog import (
    CLIENT_LEFT,
    REDACTED,
    RequestLogMiddleware,
    SubscriberCutOff,
    redact_query,
    request_id_of,
)
from gateway.rest.plurals import PluralCaseMiddleware
from tests.ops.conftest import GatewayFactory

App = Callable[[Scope, Receive, Send], Awaitable[None]]


def http_scope(
    path: str = "/api/Todos", query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": headers or [],
        "client": ("10.0.0.7", 5555),
    }


async def run(
    app: App,
    scope: Scope,
    *,
    draining: bool = False,
    metrics: PrometheusMetrics | None = None,
    incoming: list[Message] | None = None,
) -> list[Message]:
    sent: list[Message] = []
    messages = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = RequestLogMiddleware(app, draining=lambda: draining, metrics=metrics)
    await middleware(scope, receive, send)
    return sent


async def json_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"[]"})


def stream_app(*, wait_for_disconnect: bool = False, fail: BaseException | None = None) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b":ok\n\n", "more_body": True})
        if wait_for_disconnect:
            while (await receive())["type"] != "http.disconnect":
                pass
            scope[CLIENT_LEFT] = True
            return
        if fail is not None:
            raise fail
        await send({"type": "http.response.body", "body": b""})

    return app


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, object]]:
    return [r.fields for r in caplog.records if r.name == ACCESS_LOGGER and r.getMessage() == message]  # type: ignore[attr-defined]


async def test_a_request_gets_an_id_echoed_and_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, ACCESS_LOGGER)
    sent = await run(json_app, http_scope())
    headers = dict(sent[0]["headers"])
    request_id = headers[b"x-request-id"].decode()
    assert len(request_id) == 32
    (line,) = records(caplog, "request")
    assert line["request_id"] == request_id
    assert line["method"] == "GET"
    assert line["path"] == "/api/Todos"
    assert line["status"] == 200
    assert line["client"] == "10.0.0.7"
    assert isinstance(line["duration_ms"], float)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"abc-123_X.y:z", True),
        (b"4f2a3b", True),
        (b"with space", False),
        (b"new\nline", False),
        (b"x" * 129, False),
        (b"", False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_plain(given: bytes, kept: bool) -> None:
    request_id = request_id_of(http_scope(headers=[(b"x-request-id", given)]))
    assert (request_id == given.decode()) is kept


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        (b"filter=%7B%7D", "filter=%7B%7D"),
        (b"access_token=s3cret&filter=x", f"access_token={REDACTED}&filter=x"),
        (b"ticket=abc", f"ticket={REDACTED}"),
        (b"a=1&API_KEY=k&password=p", f"a=1&API_KEY={REDACTED}&password={REDACTED}"),
        (b"access%5Ftoken=s3cret", f"access%5Ftoken={REDACTED}"),
        (b"lastEventId=abc-1-0", "lastEventId=abc-1-0"),
    ],
)
def test_secret_query_values_are_redacted(query: bytes, logged: str) -> None:
    assert redact_query(query) == logged


async def test_credentials_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    scope = http_scope(query=b"access_token=s3cret", headers=[(b"authorization", b"Bearer s3cret")])
    await run(json_app, scope)
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(records(caplog, "request"))


@pytest.mark.parametrize(
    ("app", "draining", "incoming", "reason"),
    [
        (stream_app(), False, None, "server"),
        (stream_app(), True, None, "shutdown"),
        (stream_app(wait_for_disconnect=True), False, [{"type": "http.disconnect"}], "client"),
    ],
    ids=["server", "shutdown", "client"],
)
async def test_a_stream_logs_open_and_close_with_its_reason(
    caplog: pytest.LogCaptureFixture, app: App, draining: bool, incoming: list[Message] | None, reason: str
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    scope = http_scope("/api/Todos/change-stream", headers=[(b"last-event-id", b"e-1-0")])
    await run(app, scope, draining=draining, incoming=incoming)
    (opened,) = records(caplog, "stream open")
    (closed,) = records(caplog, "stream close")
    assert opened["resume"] is True
    assert closed["reason"] == reason
    assert closed["request_id"] == opened["request_id"]
    assert isinstance(closed["duration_s"], float)
    assert records(caplog, "request") == []


async def test_a_stream_at_a_plural_in_another_case_still_tells_the_log_its_client_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The plural-case rewrite sits between the log and the stream: what the stream tells the log through
    the scope must cross it (it once copied the scope, and every such stream was logged as ended by us)."""
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    seen: list[str] = []
    stream = stream_app(wait_for_disconnect=True)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await stream(scope, receive, send)

    plurals = PluralCaseMiddleware(app, ["Todos"], rest_root="/api")
    await run(plurals, http_scope("/api/todos/change-stream"), incoming=[{"type": "http.disconnect"}])
    assert seen == ["/api/Todos/change-stream"]
    (closed,) = records(caplog, "stream close")
    assert closed["reason"] == "client"


async def test_a_cut_off_stream_is_logged_as_slow_and_the_error_propagates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    with pytest.raises(SubscriberCutOff):
        await run(stream_app(fail=SubscriberCutOff()), http_scope("/api/Todos/change-stream"))
    (closed,) = records(caplog, "stream close")
    assert closed["reason"] == "slow"


async def test_a_crash_before_the_response_is_logged_as_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run(broken, http_scope())
    (line,) = records(caplog, "request")
    assert line["status"] == 500
    assert line["error"] == "RuntimeError"
    assert any(r.levelno == logging.WARNING for r in caplog.records if r.name == ACCESS_LOGGER)


async def test_probes_are_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    await run(json_app, http_scope("/readyz"))
    assert records(caplog, "request") == []
    caplog.set_level(logging.DEBUG, ACCESS_LOGGER)
    await run(json_app, http_scope("/readyz"))
    assert len(records(caplog, "request")) == 1


async def test_requests_are_counted() -> None:
    metrics = PrometheusMetrics()
    await run(json_app, http_scope(), metrics=metrics)
    await run(stream_app(), http_scope("/api/Todos/change-stream"), metrics=metrics)
    text = metrics.render().decode()
    assert 'gateway_http_requests_total{kind="rest",method="GET",status="200"} 1.0' in text
    assert 'gateway_http_requests_total{kind="stream",method="GET",status="200"} 1.0' in text
    assert 'gateway_http_request_duration_seconds_count{kind="rest"} 1.0' in text


async def test_body_writes_go_straight_to_the_server() -> None:
    """On the stream hot path the middleware's `send` returns the server's own awaitable: no coroutine of
    its own per write."""
    seen: list[object] = []

    async def server_send(message: Message) -> None:
        pass

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        awaitable = send({"type": "http.response.body", "body": b"x", "more_body": True})
        seen.append(awaitable)
        await awaitable

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await RequestLogMiddleware(app)(http_scope(), receive, server_send)
    (awaitable,) = seen
    assert inspect.iscoroutine(awaitable)
    assert awaitable.cr_code is server_send.__code__  # type: ignore[attr-defined]


async def test_lifespan_passes_through() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        pass

    await RequestLogMiddleware(app)({"type": "lifespan"}, nothing, ignore)
    assert calls == ["lifespan"]


async def test_the_app_echoes_ids_on_every_answer(in_process: GatewayFactory) -> None:
    async with in_process() as (client, _gateway):
        response = await client.get("/api/Todos", headers={"X-Request-ID": "trace-42"})
        assert response.headers["X-Request-ID"] == "trace-42"
        missing = await client.get("/api/Nothing")
        assert missing.status_code == 404
        assert len(missing.headers["X-Request-ID"]) == 32
        invalid = await client.post("/api/Todos", content=b"{", headers={"Content-Type": "application/json"})
        assert invalid.status_code == 400
        assert "X-Request-ID" in invalid.headers


def test_new_request_ids_are_unique_in_a_process_and_across_forked_workers() -> None:
    here = {request_id_of(http_scope()) for _ in range(1000)}
    assert len(here) == 1000
    assert all(len(request_id) == 32 and int(request_id, 16) >= 0 for request_id in here)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # a prefork worker: its ids must not repeat the parent's
        os.write(writer, request_id_of(http_scope()).encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(reader, 64).decode()
    os.close(reader)
    os.close(writer)
    assert from_child[:16] != request_id_of(http_scope())[:16]
