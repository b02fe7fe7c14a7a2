"""The `gateway` command: a thin shell over typed functions (serve, migrate)."""

from __future__ import annotations

import asyncio

import typer
import uvicorn

from gateway.changes.outbox import outbox_table
from gateway.config import Settings, SettingsError, load_settings
from gateway.database import create_engine, create_tables
from gateway.models.loader import ModelDefinitionError, load_registry
from gateway.models.tables import build_tables

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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes (needs GATEWAY_BROKER_URL=redis://...)."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Serve the REST API and change streams (development; use gunicorn in production)."""
    settings = _settings()
    if workers > 1 and settings.uses_memory_broker:
        raise _fail(
            "the embedded memory broker serves one process; set GATEWAY_BROKER_URL=redis://... to run "
            f"{workers} workers"
        )
    try:
        load_registry(settings.models)
    except ModelDefinitionError as exc:
        raise _fail(f"GATEWAY_MODELS: {exc}") from None
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
    )


@app.command()
def migrate() -> None:
    """Create missing tables (safe to run while workers are starting)."""
    settings = _settings()
    try:
        asyncio.run(_migrate(settings))
    except ModelDefinitionError as exc:
        raise _fail(f"GATEWAY_MODELS: {exc}") from None
    typer.echo("gateway: tables are up to date")


async def _migrate(settings: Settings) -> None:
    tables = build_tables(load_registry(settings.models))
    outbox_table(tables.metadata)
    engine = create_engine(settings.database_url)
    try:
        await create_tables(engine, tables.metadata)
    finally:
        await engine.dispose()


def main() -> None:
    app(prog_name="gateway")


if __name__ == "__main__":
    main()
