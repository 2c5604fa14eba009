"""Herald's own settings: one frozen value with defaults, built from flags/env only in ``cli``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["DEFAULT_RETRY_SCHEDULE", "MAX_PENDING_LIMIT", "Network", "Settings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Delays in seconds before attempts 2, 3, ...: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# (8 attempts over about 27.6 hours), so a receiver down for a day still gets everything.
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)

# The CRDs' ``status.pending`` maxItems (tests hold the two equal): a longer queue would make
# the API server refuse every status patch of the webhook with 422.
MAX_PENDING_LIMIT = 1000


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Retry policy.
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    retry_jitter: float = 0.2  # each delay is scaled by a factor in [1 - jitter, 1 + jitter]
    retry_after_min: float = 1.0  # Retry-After is clamped to this range
    retry_after_max: float = 3600.0

    # One attempt.
    connect_timeout: float = 5.0
    delivery_timeout: float = 15.0  # total, connect included
    max_response_bytes: int = 64 * 1024  # the rest of a response body is never read

    # Egress policy.
    egress_allow: tuple[Network, ...] = ()
    egress_deny_private: bool = False
    require_https: bool = False

    # Bounds.
    history_limit: int = 20  # recent deliveries kept on a webhook's status
    max_pending: int = 100  # unfinished deliveries persisted per webhook, at most MAX_PENDING_LIMIT
    max_concurrency: int = 64  # attempts in flight across all webhooks
    status_interval: float = 1.0  # at most one status patch per webhook per interval
    secret_cache_ttl: float = 10.0  # a rotated Secret is used within this many seconds
    namespace_cache_ttl: float = 30.0  # namespace labels for ClusterWebhook namespaceSelector

    # Where to listen.
    health_port: int = 8080
    metrics_port: int = 9090

    # Two replicas: only the holder of the Lease runs the operator.
    leader_election: bool = False
    lease_namespace: str = "herald-system"
    lease_name: str = "herald"
    lease_duration: float = 15.0

    # A watch request ends after this many seconds and kopf re-lists, healing silent connections.
    watch_timeout: int = 300  # whole seconds: the API server refuses a fractional timeoutSeconds

    # What to watch: None means all namespaces.
    namespaces: tuple[str, ...] | None = None
    scanning: bool = True

    # Deployment sources to run (deployments, argocd, flux); None: each whose API the cluster
    # serves, resolved by ``herald run`` at startup (a registry built from None runs none).
    sources: tuple[str, ...] | None = None
