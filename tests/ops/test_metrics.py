"""Metrics: every family the operations guide names is exported, and under gunicorn (prometheus multiprocess
mode) any worker's /metrics adds up all the workers of the instance, forgetting dead workers' gauges but not
their counters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import PrometheusMetrics
from tests.server import ROOT

FAMILIES = {
    "gateway_stream_connections",
    "gateway_stream_connections_opened",
    "gateway_events_published",
    "gateway_publish_errors",
    "gateway_events_delivered",
    "gateway_events_replayed",
    "gateway_stream_resets",
    "gateway_slow_subscriber_cutoffs",
    "gateway_slow_subscriber_stalls",
    "gateway_slow_subscriber_catch_ups",
    "gateway_outbox_backlog",
    "gateway_relay_leases",
    "gateway_reader_lag_seconds",
    "gateway_publish_latency_seconds",
    "gateway_publish_to_deliver_seconds",
    "gateway_draining",
    "gateway_http_requests",
    "gateway_http_request_duration_seconds",
}


def test_every_family_is_exported() -> None:
    metrics = PrometheusMetrics()
    assert not metrics.multiprocess
    names = {family.name for family in text_string_to_metric_families(metrics.render().decode())}
    assert names >= FAMILIES


WORKER = """
import os, sys
from gateway.ops.metrics import PrometheusMetrics
metrics = PrometheusMetrics()
assert metrics.multiprocess
for _ in range(int(sys.argv[1])):
    metrics.stream_opened("Todo")
metrics.relay_leases(1)
if int(sys.argv[2]):
    metrics.draining()
metrics.fanned_out("Todo", 0, [0.0], 0.003)
print(os.getpid())
"""

RENDER = """
from gateway.ops.metrics import PrometheusMetrics
print(PrometheusMetrics().render().decode())
"""


def sample(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name:
                return found.value
    raise AssertionError(f"no sample {name}")


def python(program: str, directory: Path, *args: str) -> str:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_workers_add_up_and_dead_workers_keep_their_counts(tmp_path: Path) -> None:
    first = int(python(WORKER, tmp_path, "3", "0"))
    python(WORKER, tmp_path, "4", "1")
    text = python(RENDER, tmp_path)
    assert sample(text, "gateway_stream_connections") == 7
    assert sample(text, "gateway_stream_connections_opened_total") == 7
    assert sample(text, "gateway_relay_leases") == 2
    assert sample(text, "gateway_draining") == 1  # an instance drains if any worker does
    assert sample(text, "gateway_publish_to_deliver_seconds_count") == 2

    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(first, str(tmp_path))  # what gunicorn's child_exit hook does
    text = python(RENDER, tmp_path)
    assert sample(text, "gateway_stream_connections") == 4  # its open streams are gone with it
    assert sample(text, "gateway_stream_connections_opened_total") == 7  # its counts stay
