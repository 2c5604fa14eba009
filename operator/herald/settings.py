"""Herald's own settings: one frozen value with its defaults and its bounds, validated when it is
made (by ``herald run`` from flags and ``HERALD_*`` variables, or by a test), so a bad value is
refused in one place whoever builds it."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

__all__ = ["DEFAULT_RETRY_SCHEDULE", "MAX_PENDING_LIMIT", "Network", "Settings", "SourceName"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Delays in seconds before attempts 2, 3, ...: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# (8 attempts over about 27.6 hours), so a receiver down for a day still gets everything.
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)

# Unfinished deliveries are kept in memory (each with its notification): this caps the setting.
MAX_PENDING_LIMIT = 1_000_000

# The flags of the deployment sources (``herald.sources`` keys its table by them; a test holds
# the two equal).
SourceName = Literal["deployments", "argocd", "flux"]


def _listed(value: Any) -> Any:
    """A comma-separated string (a flag or a variable) as a list; anything else as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _networks(value: Any) -> Any:
    return tuple(
        ipaddress.ip_network(item, strict=False) if isinstance(item, str) else item for item in _listed(value)
    )


def _sources(value: Any) -> Any:
    listed = _listed(value)
    if listed == []:
        raise ValueError("name at least one source, or none")
    return () if listed == ["none"] else listed


def _namespace(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ValueError(
            f"{name!r} is not a namespace name "
            "(lowercase letters, digits and '-'; patterns are not supported)"
        )
    return name


Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=0, le=65535)]


@dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))
class Settings:
    # Retry policy.
    retry_schedule: Annotated[tuple[Annotated[float, Field(ge=0)], ...], BeforeValidator(_listed)] = (
        DEFAULT_RETRY_SCHEDULE
    )
    # Each delay is scaled by a factor in [1 - jitter, 1 + jitter].
    retry_jitter: Annotated[float, Field(ge=0, lt=1)] = 0.2
    retry_after_min: Seconds = 1.0  # Retry-After is clamped to this range
    retry_after_max: Seconds = 3600.0

    # One attempt.
    connect_timeout: Seconds = 5.0
    delivery_timeout: Seconds = 15.0  # total, connect included
    # The rest of a response body is never read.
    max_response_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024

    # Egress policy.
    egress_allow: Annotated[tuple[Network, ...], BeforeValidator(_networks)] = ()
    egress_deny_private: bool = False
    require_https: bool = False

    # Bounds.
    # Unfinished deliveries per webhook; at the bound new events wait (back-pressure), none is dropped.
    max_pending: Annotated[int, Field(ge=1, le=MAX_PENDING_LIMIT)] = 5000
    retain: Annotated[int, Field(ge=1)] = 100  # finished Delivery objects kept per webhook
    retain_for: Seconds = 7 * 24 * 3600.0  # and for at most this many seconds
    # Where a ClusterWebhook's Delivery objects live (a Webhook's live beside it).
    delivery_namespace: Annotated[str, AfterValidator(_namespace)] = "herald-system"
    max_concurrency: Annotated[int, Field(ge=1)] = 64  # attempts in flight across all webhooks
    status_interval: Seconds = 1.0  # at most one status patch per webhook per interval
    secret_cache_ttl: Annotated[float, Field(ge=0)] = (
        10.0  # a rotated Secret is used within this many seconds (0: every read)
    )
    namespace_cache_ttl: Annotated[float, Field(ge=0)] = (
        30.0  # namespace labels for ClusterWebhook namespaceSelector
    )

    # Where to listen.
    health_port: Port = 8080
    metrics_port: Port = 9090

    # Two replicas: only the holder of the Lease runs the operator.
    leader_election: bool = False
    lease_namespace: str = "herald-system"
    lease_name: str = "herald"
    lease_duration: Annotated[float, Field(ge=3)] = 15.0

    # A watch request ends after this many seconds and kopf re-lists, healing silent connections.
    # Whole seconds: the API server refuses a fractional timeoutSeconds.
    watch_timeout: Annotated[int, Field(ge=1)] = 300

    # What to watch: None means all namespaces.
    namespaces: tuple[Annotated[str, AfterValidator(_namespace)], ...] | None = None
    scanning: bool = True

    # Deployment sources to run (deployments, argocd, flux); None: each whose API the cluster
    # serves, resolved by ``herald run`` at startup (a registry built from None runs none).
    sources: Annotated[tuple[SourceName, ...] | None, BeforeValidator(_sources)] = None
