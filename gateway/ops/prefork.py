"""What gunicorn's arbiter needs to run the gateway, as typed functions that `deploy/gunicorn.conf.py` calls.

The config file stays a short list of settings; the decisions live here, where they are type-checked and
tested:
- how many workers and where to listen, from `GATEWAY_WORKERS`/`WEB_CONCURRENCY` and
  `GATEWAY_BIND`/`PORT` (gunicorn's own `--workers`/`--bind` still override);
- the CPUs this container may use (a cgroup CPU quota, not the host's core count: a pod limited to 2 CPUs on
  a 64-core node must not start 64 workers);
- the timeouts, derived from the drain window so gunicorn never kills a draining worker;
- the arbiter's hooks: refuse several workers on the embedded memory broker, and give the instance's
  workers one prometheus multiprocess directory (see `gateway.ops.metrics`), cleaned at start and of dead
  workers' gauges.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from gateway.config import Settings

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client reads it once, when it is first imported; so this module must not import it (nor
`gateway.ops.metrics`): the arbiter sets it before forking, and workers import prometheus_client after."""
DEFAULT_PORT = 3000
DRAIN_MARGIN = 15.0
"""Seconds beyond the drain window for in-flight REST requests and the lifespan shutdown (leases, pools)."""
KEEPALIVE = 75
"""Idle keep-alive seconds: above the load balancer's upstream idle timeout (nginx: 60 s), so the balancer
always closes an idle connection first and never sends a request into one the worker is closing."""
CGROUP_ROOT = Path("/sys/fs/cgroup")


class _Config(Protocol):
    workers: int


class Arbiter(Protocol):
    """The parts of gunicorn's `Arbiter` the hooks use."""

    cfg: _Config


class Worker(Protocol):
    pid: int


def bind_addresses(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """`GATEWAY_BIND` (comma-separated), else `0.0.0.0:$PORT`, else `0.0.0.0:3000`."""
    environ = dict(os.environ) if environ is None else environ
    if settings.bind:
        return [address.strip() for address in settings.bind.split(",") if address.strip()]
    port = environ.get("PORT", "").strip()
    return [f"0.0.0.0:{port or DEFAULT_PORT}"]


def worker_count(settings: Settings, environ: dict[str, str] | None = None) -> int:
    """`GATEWAY_WORKERS`, else `WEB_CONCURRENCY`, else the CPUs available to this process."""
    environ = dict(os.environ) if environ is None else environ
    if settings.workers:
        return settings.workers
    concurrency = environ.get("WEB_CONCURRENCY", "").strip()
    if concurrency:
        try:
            count = int(concurrency)
        except ValueError:
            raise ValueError(f"WEB_CONCURRENCY must be a whole number, not {concurrency!r}") from None
        if count < 1:
            raise ValueError(f"WEB_CONCURRENCY must be at least 1, not {count}")
        return count
    return available_cpus()


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 (or v1) CPU quota, at least 1."""
    count = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota(root: Path) -> float | None:
    try:
        text = (root / "cpu.max").read_text().split()  # v2: "<quota|max> <period>"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 means no quota
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def graceful_timeout(settings: Settings) -> int:
    """Seconds gunicorn waits for a stopping worker before SIGKILL: the drain window plus a margin."""
    return math.ceil(settings.drain_seconds + DRAIN_MARGIN)


def worker_timeout(settings: Settings) -> int:
    """Seconds without a heartbeat before gunicorn kills a worker.

    Long streams do not count against it: the uvicorn worker heartbeats from its event loop every
    timeout/2 seconds whatever its connections do, so only a blocked loop trips it. But the heartbeat stops
    once the worker starts shutting down, and a worker stopped alone (a reload, a worker restart) is judged by
    this timeout, not the graceful one: it must outlast a drain too.
    """
    return max(30, graceful_timeout(settings) + 5)


def refuse_memory_broker(settings: Settings, workers: int) -> None:
    """Raise RuntimeError (gunicorn prints it and exits) when several workers would each get their own
    in-process broker: writes on one worker would never reach streams on another."""
    if workers > 1 and settings.uses_memory_broker:
        raise RuntimeError(
            f"the embedded memory broker serves one process, and gunicorn would start {workers} workers; "
            "set GATEWAY_BROKER_URL=redis://... (or run one worker: GATEWAY_WORKERS=1)"
        )


class MetricsDirectory:
    """The instance's prometheus multiprocess directory, owned by the arbiter.

    `prepare()` runs before any worker starts: it uses `PROMETHEUS_MULTIPROC_DIR` if set (and empties it:
    files left by an earlier run would be counted again), or creates a private temporary one and exports it
    so the workers inherit it. One directory per instance; two instances sharing one would add up each
    other's.
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self._created = False

    def prepare(self) -> Path:
        if "prometheus_client" in sys.modules:
            raise RuntimeError(
                "prometheus_client was imported by the arbiter before its multiprocess directory was set; "
                "workers would not aggregate their metrics (do not preload the app)"
            )
        configured = os.environ.get(MULTIPROCESS_ENV)
        if configured:
            path = Path(configured)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink(missing_ok=True)
        else:
            path = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
            os.environ[MULTIPROCESS_ENV] = str(path)
            self._created = True
        self.path = path
        return path

    def worker_exited(self, pid: int) -> None:
        """Forget the gauges of a dead worker (its counters stay in the instance's totals)."""
        if self.path is None:
            return
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        """Delete the directory if this process created it."""
        if self.path is not None and self._created:
            shutil.rmtree(self.path, ignore_errors=True)
            if os.environ.get(MULTIPROCESS_ENV) == str(self.path):
                del os.environ[MULTIPROCESS_ENV]
        self.path = None
