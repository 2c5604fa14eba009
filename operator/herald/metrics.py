"""Prometheus metrics. Labels carry only bounded values: kinds, event types, outcomes, reasons."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """One set of metrics on its own registry, so tests and the demo can run several operators."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.deliveries = Counter(
            "herald_deliveries_total",
            "Deliveries finished, by webhook kind, event type and final outcome.",
            ["kind", "event", "outcome"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "herald_delivery_attempts_total",
            "Delivery attempts by result: success, or the failure reason (HTTPError, Timeout, ...).",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "herald_delivery_duration_seconds",
            "Duration of one delivery attempt, connect to response.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
            registry=self.registry,
        )
        self.pending = Gauge(
            "herald_pending_deliveries",
            "Deliveries queued or waiting for a retry, across all webhooks.",
            registry=self.registry,
        )
        self.deployment_events = Counter(
            "herald_deployment_events_total",
            "Deployment events detected on Environments, by event type.",
            ["event"],
            registry=self.registry,
        )
        self.endpoints_disabled = Counter(
            "herald_endpoints_disabled_total",
            "Webhooks disabled because every attempt failed for their spec.disableAfter, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.delivery_writes = Counter(
            "herald_delivery_writes_total",
            "API writes of Delivery objects, by verb (create, patch, delete).",
            ["verb"],
            registry=self.registry,
        )
        self.deliveries_pruned = Counter(
            "herald_deliveries_pruned_total",
            "Finished Delivery objects deleted by retention (count per webhook, age).",
            registry=self.registry,
        )
        self.deferred = Counter(
            "herald_deliveries_deferred_total",
            "Deliveries not queued because their webhook was at its backlog bound; derived again later.",
            registry=self.registry,
        )
        self.status_patches = Counter(
            "herald_status_patches_total",
            "Status patches written to Webhooks and ClusterWebhooks.",
            registry=self.registry,
        )
