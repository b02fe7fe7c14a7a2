"""The `gateway` command and settings: clear failures that name the setting, safe concurrent migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from gateway.config import SettingsError, load_settings
from gateway.database import create_engine
from tests.conftest import EXAMPLE_MODELS, DatabaseFactory


def gateway(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("GATEWAY_DATABASE_URL", "mysql://x", "GATEWAY_DATABASE_URL"),
        ("GATEWAY_BROKER_URL", "kafka://x", "GATEWAY_BROKER_URL"),
        ("GATEWAY_HEARTBEAT", "-1", "GATEWAY_HEARTBEAT"),
        ("GATEWAY_HEARTBEAT", "often", "GATEWAY_HEARTBEAT"),
        ("GATEWAY_REST_ROOT", "api", "GATEWAY_REST_ROOT"),
        ("GATEWAY_STREAM_MAXLEN", "10", "GATEWAY_STREAM_MAXLEN"),
    ],
)
def test_a_bad_setting_fails_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()
    result = gateway("serve", env={variable: value})
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_models_fail_at_start(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"name": "A", "properties": {"x": {"type": "GeoPoint"}}}')
    result = gateway("serve", env={"GATEWAY_MODELS": str(tmp_path)})
    assert result.returncode == 2
    assert "GATEWAY_MODELS" in result.stderr
    assert "GeoPoint" in result.stderr


def test_the_memory_broker_refuses_several_workers() -> None:
    result = gateway("serve", "--workers", "2", env={"GATEWAY_BROKER_URL": "memory://"})
    assert result.returncode == 2
    assert "GATEWAY_BROKER_URL=redis://" in result.stderr


async def test_concurrent_migrations_on_postgresql_do_not_race(postgres_database: DatabaseFactory) -> None:
    url = await postgres_database()
    env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_MODELS": str(EXAMPLE_MODELS)}
    runs = [
        asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "migrate", env={**os.environ, **env}, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    processes = await asyncio.gather(*runs)
    results = await asyncio.gather(*(p.communicate() for p in processes))
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err.decode() for _, err in results]
    engine = create_engine(url)
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    await engine.dispose()
    assert set(tables) >= {"todo", "gateway_outbox"}
