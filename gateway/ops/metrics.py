"""The gateway's metrics behind a small interface (as Mercure does): Prometheus, or nothing at all.

Every module reports through `Metrics`, one method per kind of event, and knows nothing of Prometheus;
`PrometheusMetrics` keeps them on a registry of the gateway's own (no process-wide globals), `NoMetrics`
drops them (embedding, benchmarks of the bare path). Hot-path counters are incremented once per batch (an
event fanned out to N subscribers adds N in one call), never once per connection, because each `inc()` takes
a lock.

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
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory shared by the workers of this instance, when metrics are aggregated across them."""
    return os.environ.get(MULTIPROCESS_ENV) or None


class Metrics(Protocol):
    """What the gateway reports; `model` is a model's stream name."""

    def stream_opened(self, model: str) -> None: ...
    def stream_closed(self, model: str) -> None: ...
    def fanned_out(self, model: str, delivered: int, committed_at: Iterable[float], now: float) -> None:
        """One broker batch handed to the subscribers: `delivered` frames queued in all (one call per
        batch, never per connection), the batch's commit times (Unix), and the time it was handed over."""
        ...

    def delivered(self, model: str, count: int) -> None:
        """Live frames held back during a replay and queued at the hand-over."""
        ...

    def replayed(self, model: str, count: int) -> None: ...
    def reset(self, model: str, reason: str, count: int = 1) -> None: ...
    def stalled(self, model: str) -> None: ...
    def caught_up(self, model: str) -> None: ...
    def cut_off(self, model: str, reason: str) -> None: ...
    def published(self, model: str, committed_at: Iterable[float], now: float) -> None: ...
    def publish_failed(self, model: str) -> None: ...
    def outbox_backlog(self, count: int) -> None: ...
    def relay_leases(self, count: int) -> None: ...
    def draining(self) -> None: ...
    def broker_unavailable(self, operation: str) -> None: ...
    def http_request(self, kind: str, method: str, status: int, duration: float | None) -> None:
        """A request answered; `duration` is None for a change stream (it lasts as long as the client)."""
        ...

    def render(self) -> bytes:
        """The exposition `/metrics` serves."""
        ...


class NoMetrics:
    """Reports nothing."""

    def stream_opened(self, model: str) -> None:
        return None

    def stream_closed(self, model: str) -> None:
        return None

    def fanned_out(self, model: str, delivered: int, committed_at: Iterable[float], now: float) -> None:
        return None

    def delivered(self, model: str, count: int) -> None:
        return None

    def replayed(self, model: str, count: int) -> None:
        return None

    def reset(self, model: str, reason: str, count: int = 1) -> None:
        return None

    def stalled(self, model: str) -> None:
        return None

    def caught_up(self, model: str) -> None:
        return None

    def cut_off(self, model: str, reason: str) -> None:
        return None

    def published(self, model: str, committed_at: Iterable[float], now: float) -> None:
        return None

    def publish_failed(self, model: str) -> None:
        return None

    def outbox_backlog(self, count: int) -> None:
        return None

    def relay_leases(self, count: int) -> None:
        return None

    def draining(self) -> None:
        return None

    def broker_unavailable(self, operation: str) -> None:
        return None

    def http_request(self, kind: str, method: str, status: int, duration: float | None) -> None:
        return None

    def render(self) -> bytes:
        return b""


class PrometheusMetrics:
    """Every metric the gateway exports, in Prometheus; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir()
        r = self.registry
        self._published = Counter(
            "gateway_events_published", "Changes appended to a stream by this relay", ["model"], registry=r
        )
        self._publish_errors = Counter(
            "gateway_publish_errors",
            "Failed attempts to append outbox rows to the broker",
            ["model"],
            registry=r,
        )
        self._publish_latency = Histogram(
            "gateway_publish_latency_seconds",
            "Time from outbox insert (commit) to the change being in the stream",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._outbox_backlog = Gauge(
            "gateway_outbox_backlog",
            "Committed changes not yet published to the broker",
            registry=r,
            multiprocess_mode="livemostrecent",  # every worker counts the same table
        )
        self._relay_leases = Gauge(
            "gateway_relay_leases",
            "Streams whose relay lease this instance holds",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._connections = Gauge(
            "gateway_stream_connections",
            "Open change-stream connections",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._connections_opened = Counter(
            "gateway_stream_connections_opened", "Change-stream connections accepted", ["model"], registry=r
        )
        self._delivered = Counter(
            "gateway_events_delivered", "Change frames queued to subscribers", ["model"], registry=r
        )
        self._replayed = Counter(
            "gateway_events_replayed", "Change frames sent from history on resume", ["model"], registry=r
        )
        self._resets = Counter(
            "gateway_stream_resets",
            "Resumes that could not be honoured (event: reset)",
            ["model", "reason"],
            registry=r,
        )
        self._slow_cutoffs = Counter(
            "gateway_slow_subscriber_cutoffs",
            "Slow subscribers ended: socket took nothing for the write timeout, or their catch-up was reset",
            ["model", "reason"],
            registry=r,
        )
        self._stalls = Counter(
            "gateway_slow_subscriber_stalls",
            "Subscribers that fell behind their bound and left live fan-out to catch up from history",
            ["model"],
            registry=r,
        )
        self._catch_ups = Counter(
            "gateway_slow_subscriber_catch_ups",
            "Stalled subscribers that caught up from history and rejoined live fan-out",
            ["model"],
            registry=r,
        )
        self._reader_lag = Gauge(
            "gateway_reader_lag_seconds",
            "Age of the newest entry the stream reader handled",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._deliver_latency = Histogram(
            "gateway_publish_to_deliver_seconds",
            "Time from commit to the frame being handed to subscribers",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._draining = Gauge(
            "gateway_draining",
            "1 while the worker drains for shutdown",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._broker_unavailable = Counter(
            "gateway_broker_unavailable",
            "Requests refused (503) because the broker did not answer in time",
            ["operation"],
            registry=r,
        )
        self._http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered (a change stream counts when it ends)",
            ["kind", "method", "status"],
            registry=r,
        )
        self._http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer a request that is not a change stream",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def stream_opened(self, model: str) -> None:
        self._connections.labels(model).inc()
        self._connections_opened.labels(model).inc()

    def stream_closed(self, model: str) -> None:
        self._connections.labels(model).dec()

    def fanned_out(self, model: str, delivered: int, committed_at: Iterable[float], now: float) -> None:
        newest = 0.0
        for committed in committed_at:
            self._deliver_latency.observe(max(0.0, now - committed))
            newest = committed
        self._reader_lag.labels(model).set(max(0.0, now - newest))
        if delivered:
            self._delivered.labels(model).inc(delivered)

    def delivered(self, model: str, count: int) -> None:
        if count:
            self._delivered.labels(model).inc(count)

    def replayed(self, model: str, count: int) -> None:
        if count:
            self._replayed.labels(model).inc(count)

    def reset(self, model: str, reason: str, count: int = 1) -> None:
        self._resets.labels(model, reason).inc(count)

    def stalled(self, model: str) -> None:
        self._stalls.labels(model).inc()

    def caught_up(self, model: str) -> None:
        self._catch_ups.labels(model).inc()

    def cut_off(self, model: str, reason: str) -> None:
        self._slow_cutoffs.labels(model, reason).inc()

    def published(self, model: str, committed_at: Iterable[float], now: float) -> None:
        count = 0
        for committed in committed_at:
            self._publish_latency.observe(max(0.0, now - committed))
            count += 1
        self._published.labels(model).inc(count)

    def publish_failed(self, model: str) -> None:
        self._publish_errors.labels(model).inc()

    def outbox_backlog(self, count: int) -> None:
        self._outbox_backlog.set(count)

    def relay_leases(self, count: int) -> None:
        self._relay_leases.set(count)

    def draining(self) -> None:
        self._draining.set(1)

    def broker_unavailable(self, operation: str) -> None:
        self._broker_unavailable.labels(operation).inc()

    def http_request(self, kind: str, method: str, status: int, duration: float | None) -> None:
        self._http_requests.labels(kind, method, str(status)).inc()
        if duration is not None:
            self._http_duration.labels(kind).observe(duration)

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
