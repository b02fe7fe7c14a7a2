"""Schemathesis over the gateway's own OpenAPI document, every phase and every applicable check, 0 failures:
on SQLite + the memory broker and on PostgreSQL + Redis, with authentication off and on.

Every check runs on every operation; tests/schemathesis.toml and tests/fuzzing_hooks.py narrow three of
them where an operation promises less, each with its reason. The seed is fixed (`GATEWAY_FUZZ_SEED`,
default 1) so that CI is reproducible. To keep the four runs near two minutes in all: `GATEWAY_FUZZ_EXAMPLES`
(default 5 per operation); the coverage phase (every branch of every schema: the same document whatever
the backend) runs once, on SQLite without authentication, over the operations whose schemas are not
another's (`tests.fuzzing.st_config`); the change streams (each open one is read for a second) are fuzzed
on PostgreSQL + Redis, with authentication off and on. The soak (loadtests/fuzz_soak.py) runs every phase
over every operation with random seeds and many more examples.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.fuzzing import PHASES, fuzz_env, st_command, st_config, st_env
from tests.server import GatewayProcess

SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "1"))
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "5"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
@pytest.mark.parametrize("backend", ["sqlite-memory", "postgresql-redis"])
async def test_schemathesis_finds_nothing(
    tmp_path: Path,
    postgres_database: DatabaseFactory,
    redis_url: str,
    redis_prefix: str,
    backend: str,
    auth: bool,
) -> None:
    if backend == "postgresql-redis":
        env = fuzz_env(
            tmp_path,
            EXAMPLE_MODELS,
            database_url=await postgres_database(),
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            auth=auth,
        )
    else:
        env = fuzz_env(tmp_path, EXAMPLE_MODELS, auth=auth)
    gateway = GatewayProcess(env, log_path=tmp_path / "gateway.log")
    await asyncio.to_thread(gateway.start)
    try:
        report = tmp_path / "junit.xml"
        coverage = (backend, auth) == ("sqlite-memory", False)
        command = st_command(
            gateway.url,
            seed=SEED,
            examples=EXAMPLES,
            report=report,
            auth=auth,
            phases=PHASES if coverage else "examples,fuzzing,stateful",
            config=st_config(tmp_path, once=True),
            streams=backend == "postgresql-redis",
        )
        process = await asyncio.create_subprocess_exec(
            *command,
            env=st_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # schemathesis keeps its example database in the working directory
        )
        output, _ = await process.communicate()
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            ready = await client.get("/readyz")  # the worker came through it healthy
    finally:
        await asyncio.to_thread(gateway.kill)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20_000:]
    assert ready.status_code == 200, ready.text
    suites = ElementTree.parse(report).getroot().iter("testsuite")
    totals = [(int(s.get("tests", 0)), int(s.get("failures", 0)), int(s.get("errors", 0))) for s in suites]
    assert sum(tests for tests, _, _ in totals) >= (21 if backend == "postgresql-redis" else 19)
    assert sum(failures + errors for _, failures, errors in totals) == 0, text[-20_000:]
