"""Schemathesis (`st run`, every phase) against a real `gateway serve`: shared by the suite and the soak.

The suite (tests/rest/test_fuzz.py) runs it with a fixed seed and few examples per operation; the soak
(loadtests/fuzz_soak.py) with a random seed and many. The change streams are fuzzed too: schemathesis
reads a stream's status, headers and first frames and closes it (CONFIG's `max-stream-events` and
`request-timeout` for them), and checks them against the document like any other reply.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jwt

SECRET = "fuzz-secret-0123456789abcdef0123456789"
CONFIG = Path(__file__).with_name("schemathesis.toml")
"""Per-operation narrowing of two checks, each with its reason; every check runs on every operation."""
HOOKS = "tests.fuzzing_hooks"
"""The one per-parameter narrowing (RE2 patterns), loaded through SCHEMATHESIS_HOOKS."""


def fuzz_env(
    directory: Path,
    models: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str = "gw",
    auth: bool = False,
) -> dict[str, str]:
    """The environment of the gateway under test: SQLite + memory unless a database and Redis are given."""
    env = {
        "GATEWAY_DATABASE_URL": database_url or f"sqlite+aiosqlite:///{directory / 'fuzz.db'}",
        "GATEWAY_MODELS": str(models),
    }
    if redis_url is not None:
        env |= {"GATEWAY_BROKER_URL": redis_url, "GATEWAY_REDIS_PREFIX": redis_prefix}
    if auth:
        env["GATEWAY_AUTH_JWT_SECRET"] = SECRET
    return env


def st_env() -> dict[str, str]:
    """The environment `st` runs in: the hooks importable from the project's root."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": root}


PHASES = "examples,coverage,fuzzing,stateful"
"""Every phase; the coverage phase (deterministic: every branch of every schema) is the slow one."""
SHARED_SCHEMAS = ("^GET /api/[^/]+$", "^POST .*/update$", "^POST .*/upsertWithWhere$")
"""Operations (by name) whose parameters are those of cheaper ones: find's filter is findOne's but for
its page limit, update's and upsertWithWhere's where is count's and their body patchAttributes'."""
SUITE_STREAM_EXAMPLES = 3
"""Examples per stream operation in the suite: each stream that opens is read for CONFIG's timeout."""


def st_config(directory: Path, *, once: bool) -> Path:
    """CONFIG; with `once` (the suite's bound; the soak walks everything), the coverage phase skips
    `SHARED_SCHEMAS`, whose schemas it walks in other operations, and the streams get fewer examples."""
    text = CONFIG.read_text()
    if once:
        for name in SHARED_SCHEMAS:
            text += f'\n[[operations]]\ninclude-name-regex = "{name}"\nphases.coverage.enabled = false\n'
        text += (
            '\n[[operations]]\ninclude-path-regex = "/change-stream$"\n'
            f"generation.max-examples = {SUITE_STREAM_EXAMPLES}\n"
        )
    config = directory / "schemathesis.toml"
    config.write_text(text)
    return config


def st_command(
    url: str,
    *,
    seed: int,
    examples: int,
    report: Path,
    auth: bool,
    phases: str = PHASES,
    config: Path = CONFIG,
    streams: bool = True,
) -> list[str]:
    """`st run` over the whole document (the streams too, unless `streams` is false), every check
    (narrowed by `config`). Run it with `st_env()` as its environment."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    if not streams:
        command += ["--exclude-path-regex", "change-stream"]
    if auth:
        token = jwt.encode({"sub": "fuzzer", "exp": time.time() + 3600}, SECRET, algorithm="HS256")
        command += ["--header", f"Authorization: Bearer {token}"]
    return command
