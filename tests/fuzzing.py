"""Schemathesis (`st run`, every phase) against a real `gateway serve`: shared by the suite and the soak.

The suite (tests/rest/test_fuzz.py) runs it with a fixed seed and few examples per operation; the soak
(loadtests/fuzz_soak.py) with a random seed and many. The change-stream operations are left out of it: a
stream never ends by itself, so every generated request would wait for its timeout; they have tests of
their own (tests/sse, tests/rest/test_hostile.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jwt

SECRET = "fuzz-secret-0123456789abcdef0123456789"
EXCLUDED_CHECKS = {
    "positive_data_acceptance": "the filter language (property names, operator value types, RE2 patterns, "
    "the limits in README's Limits) is checked against the model; the document's JSON Schema for "
    "`filter`/`where` gives its shape only, so some schema-valid filters are rightly a 400",
    "negative_data_rejection": "the same looseness the other way: the document cannot list every filter "
    "LoopBack accepts (unknown filter keys are ignored, as LoopBack does)",
    "unsupported_method": "LoopBack 3 answers a method that no route of a model handles with its 404 "
    "(`Shared class ... has no method handling`, replayed in tests/rest/test_loopback_compat.py); other "
    "paths answer 405 with `Allow`",
    "use_after_free": '`GET /P/{id}/exists` answers 200 `{"exists": false}` after a delete, as LoopBack does',
}
"""Checks left out of `--checks all`, each with the reason it cannot hold for a LoopBack-compatible API."""


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


def st_command(url: str, *, seed: int, examples: int, report: Path, auth: bool) -> list[str]:
    """`st run` over the whole document but the streams, every phase, every check but `EXCLUDED_CHECKS`."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--exclude-path-regex",
        "change-stream",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    if auth:
        token = jwt.encode({"sub": "fuzzer", "exp": time.time() + 3600}, SECRET, algorithm="HS256")
        command += ["--header", f"Authorization: Bearer {token}"]
    return command
