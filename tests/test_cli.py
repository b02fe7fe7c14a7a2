"""The `gateway` command and settings: clear failures that name the setting, safe concurrent migrations."""

from __future__ import annotations

import asyncio
import json
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


def test_every_problem_of_a_model_directory_is_one_line_then_the_start_fails(tmp_path: Path) -> None:
    problems = {
        "a.json": "{nope",
        "b.json": {"name": "B", "properties": {"x": {"type": "number", "default": "high"}}},
        "c.json": {"name": "C", "base": "Nope"},
        "d.json": {"name": "D", "strict": "sometimes"},
        "e.json": {"name": "E", "relations": {"r": {"type": "hasSome", "model": "B"}}},
    }
    for name, body in problems.items():
        (tmp_path / name).write_text(body if isinstance(body, str) else json.dumps(body))
    (tmp_path / "fine.json").write_text(json.dumps({"name": "Fine"}))
    result = gateway("serve", env={"GATEWAY_MODELS": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 5, result.stderr
    assert all(line.startswith("gateway: GATEWAY_MODELS: ") for line in lines)
    for file, needle in zip(
        sorted(problems),
        ["not valid JSON", 'default "high"', "base 'Nope'", "`strict` must be", "type 'hasSome'"],
        strict=True,
    ):
        assert any(file in line and needle in line for line in lines), (file, needle, lines)


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
