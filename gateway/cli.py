"""The `gateway` command: a thin shell over typed functions (serve, migrate, tail)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
import typer
import uvicorn

from gateway.broker.base import BrokerError
from gateway.broker.factory import redact_url
from gateway.changes.outbox import outbox_table
from gateway.client.remote import GatewayUnreachable, RemoteChangeStream, RemoteItem, Snapshot
from gateway.config import Settings, SettingsError, load_settings
from gateway.database import create_engine, create_tables
from gateway.filters import FilterError
from gateway.models.loader import ModelDefinitionError, load_registry
from gateway.models.tables import build_tables
from gateway.ops import httpguard, reuseport
from gateway.ops.logs import logging_config
from gateway.streams import Change, LocalChangeStreams, StreamError, StreamItem

OPEN_RETRY_DELAY = 0.5
"""Seconds between attempts to open a `tail` stream while `--wait` lasts."""

app = typer.Typer(help="A LoopBack 3 compatible REST and change-stream gateway.", no_args_is_help=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"gateway: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"gateway: {message}", err=True)
    return typer.Exit(2)


def _models_failed(exc: ModelDefinitionError) -> typer.Exit:
    """Every problem of the model directory, one line each, then the exit."""
    for problem in exc.problems:
        typer.echo(f"gateway: GATEWAY_MODELS: {problem}", err=True)
    return typer.Exit(2)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes (needs GATEWAY_BROKER_URL=redis://...)."),
    log_level: str | None = typer.Option(None, help="Log level (default: GATEWAY_LOG_LEVEL, info)."),
) -> None:
    """Serve the REST API and change streams (development; use gunicorn in production)."""
    settings = _settings()
    level = (log_level or settings.log_level).lower()
    try:
        log_config = logging_config(settings.log_format, level)
    except ValueError as exc:
        raise _fail(f"--log-level: {exc}") from None
    if workers > 1 and settings.uses_memory_broker:
        raise _fail(
            "the embedded memory broker serves one process; set GATEWAY_BROKER_URL=redis://... to run "
            f"{workers} workers"
        )
    try:
        load_registry(settings.models, settings.models_config)
    except ModelDefinitionError as exc:
        raise _models_failed(exc) from None
    config = uvicorn.Config(
        "gateway.app:create_app",
        factory=True,
        interface=httpguard.INTERFACE,
        host=host,
        port=port,
        workers=workers,
        log_level=level,
        log_config=log_config,
        access_log=False,  # the request log middleware writes one line per request instead
        proxy_headers=True,
        http=httpguard.PROTOCOL,  # httptools, with header and body deadlines (gateway/ops/httpguard.py)
        timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
    )
    if workers > 1:
        reuseport.serve(config)  # one listening socket per worker: streams spread evenly
    else:
        uvicorn.Server(config).run()


@app.command()
def migrate() -> None:
    """Create missing tables (safe to run while workers are starting)."""
    settings = _settings()
    try:
        asyncio.run(_migrate(settings))
    except ModelDefinitionError as exc:
        raise _models_failed(exc) from None
    typer.echo("gateway: tables are up to date")


async def _migrate(settings: Settings) -> None:
    tables = build_tables(load_registry(settings.models, settings.models_config))
    outbox_table(tables.metadata)
    engine = create_engine(settings.database_url)
    try:
        await create_tables(engine, tables.metadata)
    finally:
        await engine.dispose()


@app.command()
def tail(
    model: str = typer.Argument(..., help="The model's name or REST plural, e.g. Todo."),
    where: str | None = typer.Option(None, "--where", help="A where clause as JSON: '{\"done\": false}'."),
    fields: str | None = typer.Option(None, "--fields", help="Properties to keep in data, e.g. id,title."),
    start: str = typer.Option("now", "--from", help="now, earliest, or a position printed earlier."),
    url: str | None = typer.Option(
        None, "--url", help="Follow this gateway over HTTP (http://host:port) instead of the broker."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="GATEWAY_TOKEN",
        help="With --url: a JWT to send as 'Authorization: Bearer'; better passed in GATEWAY_TOKEN, out of "
        "the shell's history and the process list.",
    ),
    count: int | None = typer.Option(None, "--count", min=1, help="Exit after this many changes."),
    snapshot: bool = typer.Option(
        False, "--snapshot", help="With --url: first print the matching rows, then the changes after them."
    ),
    wait: float = typer.Option(
        0.0, "--wait", min=0, help="Seconds to keep trying to connect at start (later, it resumes alone)."
    ),
) -> None:
    """Print a model's changes, one JSON object per line, until interrupted (or --count changes).

    A change: {"position": "...", "target": 1, "data": {...}, "type": "create"}

    A reset: {"position": "...", "type": "reset", "reason": "epoch-changed"}

    A snapshot (--snapshot): {"position": "...", "type": "snapshot", "rows": [...]}

    Without --url, tail reads the Redis of GATEWAY_BROKER_URL (memory:// lives inside the server only).

    Exit status: 0 done or interrupted, 1 gateway or broker unreachable, 2 unknown model or bad option.
    """
    logging.basicConfig(level=logging.WARNING, format="gateway tail: %(message)s", stream=sys.stderr)
    where_object = _json_object("--where", where)
    field_names = [name.strip() for name in fields.split(",") if name.strip()] if fields else None
    opener: AbstractAsyncContextManager[AsyncIterator[RemoteItem]]
    try:
        if snapshot and url is None:
            raise _fail("--snapshot needs --url (the rows come from the gateway)")
        if url is not None:
            opener = RemoteChangeStream(
                url,
                model=model,
                where=where_object,
                fields=field_names,
                start=start,
                snapshot=snapshot,
                headers={"Authorization": f"Bearer {token}"} if token else None,
                open_timeout=wait,
            )
        else:
            opener = _local_stream(_settings(), model, where_object, field_names, start, wait)
        _run_until_interrupted(_print_changes(opener, count))
    except (GatewayUnreachable, BrokerError) as exc:
        typer.echo(f"gateway: {exc}", err=True)
        raise typer.Exit(1) from None
    except (StreamError, ValueError) as exc:  # unknown model, rejected stream, bad filter or position
        raise _fail(str(exc)) from None


def _json_object(option: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _fail(f"{option} must be a JSON object, like '{{\"done\": false}}'")
    return value


@asynccontextmanager
async def _local_stream(
    settings: Settings,
    model: str,
    where: dict[str, Any] | None,
    fields: list[str] | None,
    start: str,
    wait: float,
) -> AsyncIterator[AsyncIterator[StreamItem]]:
    """A stream read from the configured broker, opened within `wait` seconds (or one attempt)."""
    try:
        streams = LocalChangeStreams.from_settings(settings)
    except ModelDefinitionError as exc:
        raise StreamError(f"GATEWAY_MODELS: {exc}") from None
    async with streams:
        try:
            stream = streams.open(model, where=where, fields=fields, start=start)
        except FilterError as exc:
            raise StreamError(f"--where/--fields: {exc}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                await stream.open()
                break
            except BrokerError as exc:
                if loop.time() + OPEN_RETRY_DELAY > deadline:
                    label = redact_url(settings.broker_url)
                    raise BrokerError(f"cannot read the broker at {label}: {exc}") from None
                await asyncio.sleep(OPEN_RETRY_DELAY)
        async with stream:
            yield stream


async def _print_changes(
    opener: AbstractAsyncContextManager[AsyncIterator[RemoteItem]], count: int | None
) -> None:
    printed = 0
    out = sys.stdout.buffer
    async with opener as stream:
        async for item in stream:
            if isinstance(item, Change):
                line = orjson.dumps({"position": item.position, **item.change})
                printed += 1
            elif isinstance(item, Snapshot):
                line = orjson.dumps({"position": item.position, "type": "snapshot", "rows": item.rows})
            else:
                line = orjson.dumps({"position": item.position, "type": "reset", "reason": item.reason})
            out.write(line + b"\n")
            out.flush()
            if count is not None and printed >= count:
                return


def _run_until_interrupted(work: Coroutine[Any, Any, None]) -> None:
    """Run `work`; Ctrl-C, SIGTERM and a closed stdout (`| head`) end it quietly."""

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await work

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point stdout at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main() -> None:
    app(prog_name="gateway")


if __name__ == "__main__":
    main()
