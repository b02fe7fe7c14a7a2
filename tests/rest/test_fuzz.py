"""Schemathesis over the gateway's own OpenAPI document, every phase and every applicable check, 0 failures:
on SQLite + the memory broker and on PostgreSQL + Redis, with authentication off and on.

The seed is fixed (`GATEWAY_FUZZ_SEED`, default 1) so that CI is reproducible; `GATEWAY_FUZZ_EXAMPLES`
(default 15 per operation) keeps the four runs near two minutes in all. The soak with random seeds and many
more examples is loadtests/fuzz_soak.py. Checks left out, with their reasons: `tests.fuzzing.EXCLUDED_CHECKS`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import EXAMPLE_MODELS, DatabaseFactory
from tests.fuzzing import fuzz_env, st_command
from tests.server import GatewayProcess

SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "1"))
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "15"))


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
        process = await asyncio.create_subprocess_exec(
            *st_command(gateway.url, seed=SEED, examples=EXAMPLES, report=report, auth=auth),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # schemathesis keeps its example database in the working directory
        )
        output, _ = await process.communicate()
    finally:
        await asyncio.to_thread(gateway.kill)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20_000:]
    suites = ElementTree.parse(report).getroot().iter("testsuite")
    totals = [(int(s.get("tests", 0)), int(s.get("failures", 0)), int(s.get("errors", 0))) for s in suites]
    assert sum(tests for tests, _, _ in totals) >= 20  # every operation but the streams was exercised
    assert sum(failures + errors for _, failures, errors in totals) == 0, text[-20_000:]
