"""Prometheus metrics, on a registry of the gateway's own (no process-wide globals).

Hot-path counters are incremented once per batch (an event fanned out to N subscribers adds N in one call),
never once per connection, because each `inc()` takes a lock.

Under gunicorn one instance is several worker processes behind one port, and a scrape reaches whichever
worker accepts it. So `deploy/gunicorn.conf.py` turns on prometheus_client's multiprocess mode, the standard
answer: with `PROMETHEUS_MULTIPROC_DIR` set before the workers import prometheus_client, every value lives in
a per-process file in that directory, and `/metrics` on any worker adds up the files of all of them. Counters
of a worker that exited stay counted (the instance's totals never go backwards while it runs); gauges say
how to combine workers (`multiprocess_mode`) and forget dead workers (gunicorn's `child_exit` hook calls
`mark_process_dead`). Without the variable (`gateway serve`, tests) each app reports its own registry.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory shared by the workers of this instance, when metrics are aggregated across them."""
    return os.environ.get(MULTIPROCESS_ENV) or None


class Metrics:
    """Every metric the gateway exports; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir()
        r = self.registry
        self.published = Counter(
            "gateway_events_published", "Changes appended to a stream by this relay", ["model"], registry=r
        )
        self.publish_errors = Counter(
            "gateway_publish_errors",
            "Failed attempts to append outbox rows to the broker",
            ["model"],
            registry=r,
        )
        self.publish_latency = Histogram(
            "gateway_publish_latency_seconds",
            "Time from outbox insert (commit) to the change being in the stream",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "gateway_outbox_backlog",
            "Committed changes not yet published to the broker",
            registry=r,
            multiprocess_mode="livemostrecent",  # every worker counts the same table
        )
        self.relay_leases = Gauge(
            "gateway_relay_leases",
            "Streams whose relay lease this instance holds",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Gauge(
            "gateway_stream_connections",
            "Open change-stream connections",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_opened = Counter(
            "gateway_stream_connections_opened", "Change-stream connections accepted", ["model"], registry=r
        )
        self.delivered = Counter(
            "gateway_events_delivered", "Change frames queued to subscribers", ["model"], registry=r
        )
        self.replayed = Counter(
            "gateway_events_replayed", "Change frames sent from history on resume", ["model"], registry=r
        )
        self.resets = Counter(
            "gateway_stream_resets",
            "Resumes that could not be honoured (event: reset)",
            ["model", "reason"],
            registry=r,
        )
        self.slow_cutoffs = Counter(
            "gateway_slow_subscriber_cutoffs",
            "Slow subscribers ended: socket took nothing for the write timeout, or their catch-up was reset",
            ["model", "reason"],
            registry=r,
        )
        self.stalls = Counter(
            "gateway_slow_subscriber_stalls",
            "Subscribers that fell behind their bound and left live fan-out to catch up from history",
            ["model"],
            registry=r,
        )
        self.catch_ups = Counter(
            "gateway_slow_subscriber_catch_ups",
            "Stalled subscribers that caught up from history and rejoined live fan-out",
            ["model"],
            registry=r,
        )
        self.reader_lag = Gauge(
            "gateway_reader_lag_seconds",
            "Age of the newest entry the stream reader handled",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.deliver_latency = Histogram(
            "gateway_publish_to_deliver_seconds",
            "Time from commit to the frame being handed to subscribers",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.draining = Gauge(
            "gateway_draining",
            "1 while the worker drains for shutdown",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.broker_unavailable = Counter(
            "gateway_broker_unavailable",
            "Requests refused (503) because the broker did not answer in time",
            ["operation"],
            registry=r,
        )
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered (a change stream counts when it ends)",
            ["kind", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer a request that is not a change stream",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    @property
    def multiprocess(self) -> bool:
        return self._multiprocess_dir is not None

    def render(self) -> bytes:
        """The text exposition: of every worker of this instance in multiprocess mode, else of this app."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
