"""Production server: `gunicorn -c deploy/gunicorn.conf.py` (no other argument) serves the gateway.

Settings come from the gateway's own environment (`GATEWAY_*`, see gateway/config.py), read and validated
once here so that a wrong value stops the arbiter with a message naming the variable, before any worker
starts. Command-line flags (`--bind`, `--workers`, ...) still override what is set here. The decisions
(worker count, timeouts, hooks) live in gateway/ops/prefork.py, where they are typed and tested.
"""

import os
import sys

from gateway.config import SettingsError, load_settings
from gateway.ops import prefork
from gateway.ops.logs import logging_config

try:
    _settings = load_settings()
except SettingsError as exc:
    sys.exit(f"gateway: {exc}")
_metrics_directory = prefork.MetricsDirectory()

# The app: built by its factory in each worker after the fork (never preloaded: each worker owns its own
# connections, and prometheus_client must be first imported after PROMETHEUS_MULTIPROC_DIR is set).
wsgi_app = "gateway.app:create_app()"
worker_class = "gateway.ops.httpguard.GuardedUvicornWorker"  # uvicorn's, with header/body deadlines
preload_app = False
proc_name = "gateway"
# gunicorn's runtime control socket ($HOME/.gunicorn/gunicorn.ctl) is shared by every instance of a user on a
# host and needs a writable home; the gateway is steered by signals and its orchestrator instead.
control_socket_disable = True

# GATEWAY_BIND (comma-separated), else 0.0.0.0:$PORT, else 0.0.0.0:3000.
bind = prefork.bind_addresses(_settings)
# Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new connections over them.
# On one shared socket the worker that wakes first accepts: two idle workers took 34/30, 56/8 and 61/3 of 64
# connections in three tries, and streams stay for hours where they landed (tests/ops/test_reuseport.py).
reuse_port = True
# GATEWAY_WORKERS, else WEB_CONCURRENCY, else the CPUs this container may use (its cgroup quota).
try:
    workers = prefork.worker_count(_settings)
except ValueError as exc:
    sys.exit(f"gateway: {exc}")

# A stopping worker ends its streams over GATEWAY_DRAIN_SECONDS, then finishes in-flight requests and hands
# its relay leases over; gunicorn SIGKILLs it only after the drain window plus a margin.
graceful_timeout = prefork.graceful_timeout(_settings)
# Heartbeat timeout: uvicorn workers notify from their event loop whatever their streams do; it must outlast
# a drain too (a worker stopped alone is judged by it).
timeout = prefork.worker_timeout(_settings)
# Above the load balancer's upstream keep-alive (nginx: 60 s), so the balancer closes idle connections first.
keepalive = prefork.KEEPALIVE
# Heartbeat files on tmpfs: a container's overlay filesystem can stall the heartbeat.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# Logs: one format for gunicorn, uvicorn and the gateway (GATEWAY_LOG_FORMAT=json|text). No gunicorn access
# log: the gateway's request log middleware writes one line per request with its X-Request-ID.
loglevel = _settings.log_level
logconfig_dict = logging_config(_settings.log_format, _settings.log_level)
accesslog = None
errorlog = "-"


def on_starting(server):
    """Arbiter, before any worker: refuse an impossible setup, give the workers one metrics directory."""
    prefork.refuse_memory_broker(_settings, server.cfg.workers)
    path = _metrics_directory.prepare()
    server.log.info("metrics of all workers aggregate in %s", path)


def child_exit(server, worker):
    """Arbiter, after a worker exited (or was killed): drop its live gauges."""
    _metrics_directory.worker_exited(worker.pid)


def on_exit(server):
    _metrics_directory.remove()
