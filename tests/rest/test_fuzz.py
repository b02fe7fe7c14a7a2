"""Schemathesis against the gateway's own OpenAPI document: no generated request may cause a 5xx.

The document comes from the app itself; the requests go to a real server process. The change-stream
operations are left out (a stream never ends).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS
from tests.server import GatewayProcess

SPEC = create_app(Settings(models=EXAMPLE_MODELS, database_url="sqlite+aiosqlite:///:memory:")).openapi()
SCHEMA = schemathesis.openapi.from_dict(SPEC).exclude(path_regex="change-stream")
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    env = {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'fuzz.db'}",
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
    }
    with GatewayProcess(env, log_path=directory / "gateway.log") as process:
        yield process


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_no_request_causes_a_server_error(gateway: GatewayProcess, operation: str) -> None:
    strategy = OPERATIONS[operation].as_strategy()

    @given(data=st.data())
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(data: st.DataObject) -> None:
        case = data.draw(strategy)
        response = case.call(base_url=gateway.url, timeout=10)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"

    check()
