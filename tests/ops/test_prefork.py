"""What gunicorn's arbiter decides: where to listen, how many workers (within the container's CPU quota),
timeouts that outlast the drain, the memory-broker refusal, and the workers' shared metrics directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Settings, load_settings
from gateway.ops import prefork


def settings(**values: object) -> Settings:
    return Settings(broker_url="redis://127.0.0.1:6379/0", **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "environ", "bind"),
    [
        ({}, {}, ["0.0.0.0:3000"]),
        ({}, {"PORT": "8000"}, ["0.0.0.0:8000"]),
        ({"bind": "127.0.0.1:9000"}, {"PORT": "8000"}, ["127.0.0.1:9000"]),
        ({"bind": "127.0.0.1:9000, unix:/run/gw.sock"}, {}, ["127.0.0.1:9000", "unix:/run/gw.sock"]),
    ],
)
def test_bind(values: dict[str, object], environ: dict[str, str], bind: list[str]) -> None:
    assert prefork.bind_addresses(settings(**values), environ) == bind


def test_workers() -> None:
    assert prefork.worker_count(settings(workers=5), {"WEB_CONCURRENCY": "3"}) == 5
    assert prefork.worker_count(settings(), {"WEB_CONCURRENCY": "3"}) == 3
    assert prefork.worker_count(settings(), {}) == prefork.available_cpus()
    with pytest.raises(ValueError, match="WEB_CONCURRENCY"):
        prefork.worker_count(settings(), {"WEB_CONCURRENCY": "many"})
    with pytest.raises(ValueError, match="GATEWAY_WORKERS"):
        load_settings(workers=0)


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
    ids=["v2-unlimited", "v2-1.5-cpus", "v2-half-cpu", "v1-one-cpu", "v1-unlimited", "no-cgroup"],
)
def test_cpus_follow_the_container_quota(tmp_path: Path, files: dict[str, str], cpus: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert prefork.available_cpus(tmp_path) == (min(cpus, affinity) if cpus else affinity)


def test_timeouts_outlast_the_drain() -> None:
    for drain in (0.0, 10.0, 42.5, 300.0):
        current = settings(drain_seconds=drain)
        assert prefork.graceful_timeout(current) >= drain + 10
        assert prefork.worker_timeout(current) > prefork.graceful_timeout(current)
        assert prefork.worker_timeout(current) >= 30


def test_several_workers_need_a_shared_broker() -> None:
    memory = Settings(broker_url="memory://")
    prefork.refuse_memory_broker(memory, 1)
    prefork.refuse_memory_broker(settings(), 8)
    with pytest.raises(RuntimeError, match="memory broker serves one process"):
        prefork.refuse_memory_broker(memory, 2)


@pytest.fixture
def arbiter_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process as gunicorn's arbiter before the fork: prometheus_client not imported yet."""
    monkeypatch.delitem(sys.modules, "prometheus_client")
    monkeypatch.delenv(prefork.MULTIPROCESS_ENV, raising=False)


@pytest.mark.usefixtures("arbiter_process")
def test_metrics_directory_is_made_and_removed() -> None:
    directory = prefork.MetricsDirectory()
    path = directory.prepare()
    assert path.is_dir()
    assert os.environ[prefork.MULTIPROCESS_ENV] == str(path)
    directory.remove()
    assert not path.exists()
    assert prefork.MULTIPROCESS_ENV not in os.environ


@pytest.mark.usefixtures("arbiter_process")
def test_a_configured_metrics_directory_is_emptied_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(prefork.MULTIPROCESS_ENV, str(tmp_path / "metrics"))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_123.db").write_bytes(b"stale")
    directory = prefork.MetricsDirectory()
    assert directory.prepare() == tmp_path / "metrics"
    assert list((tmp_path / "metrics").iterdir()) == []
    directory.remove()
    assert (tmp_path / "metrics").is_dir()


def test_metrics_directory_refuses_a_preloaded_prometheus_client() -> None:
    assert "prometheus_client" in sys.modules
    with pytest.raises(RuntimeError, match="preload"):
        prefork.MetricsDirectory().prepare()


def test_prefork_does_not_import_prometheus_client() -> None:
    program = (
        "import sys, gateway.ops.prefork, gateway.ops.logs; assert 'prometheus_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)
