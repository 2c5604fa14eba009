"""Every Kubernetes API call Herald makes, and what kopf makes on its behalf: the source of RBAC.

``kube.KubeClient`` builds each request from an entry of ``HERALD_CALLS`` (it cannot reach a
resource that is not listed here), and ``tests/unit/test_rbac.py`` derives the rules of
``deploy/rbac.yaml`` from both tables and compares them both ways: a call without its grant, or
a grant without its call, fails CI. Data only: adding a call is adding a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HERALD_CALLS", "KOPF_CALLS", "ApiCall", "Scope", "find"]

# "cluster": the ClusterRole; "lease": the Role in Herald's own namespace (its Lease only);
# "sources": the optional component deploy/components/sources (Environment sources).
Scope = Literal["cluster", "lease", "sources"]


@dataclass(frozen=True, kw_only=True)
class ApiCall:
    api_version: str  # "v1" for the core group, else "group/version"
    resource: str  # plural, with "/subresource" when it targets one
    verb: str  # the RBAC verb: get, list, watch, create, update, patch, delete
    why: str
    scope: Scope = "cluster"

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


_HERALD = "herald.dev/v1alpha1"
# The kinds Environment sources watch, and the one of each source Herald lists to see it is usable.
_SOURCE_KINDS = (
    ("apps/v1", "deployments"),
    ("argoproj.io/v1alpha1", "applications"),
    ("kustomize.toolkit.fluxcd.io/v1", "kustomizations"),
    ("helm.toolkit.fluxcd.io/v2", "helmreleases"),
)
_SOURCE_PROBES = _SOURCE_KINDS[:3]

HERALD_CALLS: tuple[ApiCall, ...] = (
    ApiCall(api_version=_HERALD, resource="webhooks", verb="list", why="startup gate; /readyz"),
    ApiCall(api_version=_HERALD, resource="clusterwebhooks", verb="list", why="startup gate"),
    ApiCall(api_version=_HERALD, resource="webhooks/status", verb="patch", why="delivery state"),
    ApiCall(api_version=_HERALD, resource="clusterwebhooks/status", verb="patch", why="delivery state"),
    ApiCall(api_version=_HERALD, resource="environments", verb="patch", why="herald.dev/notified ledger"),
    *(
        ApiCall(api_version=_HERALD, resource="environments", verb=verb, why="Environments (listwatch)")
        for verb in ("list", "watch")
    ),
    *(
        ApiCall(api_version=_HERALD, resource="deliveries", verb=verb, why=why)
        for verb, why in (
            ("create", "a delivery is stored"),
            ("get", "is a re-derived delivery stored already"),
            ("list", "resume pending deliveries; retention"),
            ("watch", "herald.dev/redeliver on a Delivery"),
            ("patch", "a delivery's outcome"),
            ("delete", "retention"),
        )
    ),
    ApiCall(api_version="v1", resource="secrets", verb="get", why="webhook credentials, by name"),
    ApiCall(api_version="v1", resource="namespaces", verb="get", why="namespaceSelector labels"),
    ApiCall(api_version="v1", resource="events", verb="create", why="Events about ClusterWebhooks"),
    ApiCall(api_version="coordination.k8s.io/v1", resource="leases", verb="get", why="leader", scope="lease"),
    ApiCall(
        api_version="coordination.k8s.io/v1", resource="leases", verb="create", why="leader", scope="lease"
    ),
    ApiCall(
        api_version="coordination.k8s.io/v1", resource="leases", verb="patch", why="leader", scope="lease"
    ),
    ApiCall(
        api_version=_HERALD,
        resource="environments/status",
        verb="patch",
        why="a source's status",
        scope="sources",
    ),
    *(
        ApiCall(
            api_version=version, resource=plural, verb="list", why="is the source usable", scope="sources"
        )
        for version, plural in _SOURCE_PROBES
    ),
)

# kopf's watches (list then watch; with sources, of Environments too, granted above), its Kubernetes
# Events (core v1 only), and its cluster scanning.
KOPF_CALLS: tuple[ApiCall, ...] = (
    *(
        ApiCall(api_version=_HERALD, resource=plural, verb=verb, why="kopf watches")
        for plural in ("webhooks", "clusterwebhooks")
        for verb in ("list", "watch")
    ),
    ApiCall(api_version="v1", resource="events", verb="create", why="Events (kube_events): kubectl describe"),
    *(
        ApiCall(api_version=version, resource=plural, verb=verb, why="kopf watches a source", scope="sources")
        for version, plural in _SOURCE_KINDS
        for verb in ("list", "watch")
    ),
    ApiCall(api_version="v1", resource="namespaces", verb="list", why="kopf namespace scanning"),
    ApiCall(api_version="v1", resource="namespaces", verb="watch", why="kopf namespace scanning"),
    ApiCall(
        api_version="apiextensions.k8s.io/v1",
        resource="customresourcedefinitions",
        verb="list",
        why="kopf resource scanning",
    ),
    ApiCall(
        api_version="apiextensions.k8s.io/v1",
        resource="customresourcedefinitions",
        verb="watch",
        why="kopf resource scanning",
    ),
)


def find(api_version: str, resource: str, verb: str) -> ApiCall:
    """Herald's entry for a call; a call that is not in the table is a bug (and has no grant)."""
    for call in HERALD_CALLS:
        if (call.api_version, call.resource, call.verb) == (api_version, resource, verb):
            return call
    raise LookupError(f"{verb} {api_version} {resource} is not in herald.rbac.HERALD_CALLS")
