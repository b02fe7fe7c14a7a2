"""Prometheus metrics, on a registry of the gateway's own (no process-wide globals).

Hot-path counters are incremented once per batch (an event fanned out to N subscribers adds N in one call),
never once per connection, because each `inc()` takes a lock.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the gateway exports; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
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
            "gateway_outbox_backlog", "Committed changes not yet published to the broker", registry=r
        )
        self.relay_leases = Gauge(
            "gateway_relay_leases", "Streams whose relay lease this worker holds", registry=r
        )
        self.connections = Gauge(
            "gateway_stream_connections", "Open change-stream connections", ["model"], registry=r
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
            "Subscribers ended because they fell behind their bound",
            ["model"],
            registry=r,
        )
        self.reader_lag = Gauge(
            "gateway_reader_lag_seconds",
            "Age of the newest entry the stream reader handled",
            ["model"],
            registry=r,
        )
        self.deliver_latency = Histogram(
            "gateway_publish_to_deliver_seconds",
            "Time from commit to the frame being handed to subscribers",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.draining = Gauge("gateway_draining", "1 while the worker drains for shutdown", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
