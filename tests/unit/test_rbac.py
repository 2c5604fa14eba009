"""herald/rbac.py is what the client really calls: every request KubeClient can make is an entry
of ``HERALD_CALLS``, and every entry is made by some method (test_deploy.py then holds
deploy/rbac.yaml to the table)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from herald.kube import ApiConnection, KubeClient
from herald.rbac import HERALD_CALLS, find

VERBS = {("GET", True): "get", ("GET", False): "list", ("POST", False): "create", ("PATCH", True): "patch"}
VERBS |= {("PUT", True): "update", ("DELETE", True): "delete"}


def call_of(request: httpx.Request) -> tuple[str, str, str]:
    """(apiVersion, resource[/subresource], RBAC verb) of a request, read from its path (and
    ``?watch``)."""
    parts = request.url.path.strip("/").split("/")
    if parts[0] == "api":
        api_version, rest = parts[1], parts[2:]
    else:
        api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    plural, name, subresource = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else ""
    resource = f"{plural}/{subresource}" if subresource else plural
    if request.url.params.get("watch") in ("true", "1"):
        return api_version, resource, "watch"
    return api_version, resource, VERBS[(request.method, name is not None)]


EVERY_METHOD: dict[str, Callable[[KubeClient], Awaitable[Any]]] = {
    "patch_status": lambda k: k.patch_status(plural="webhooks", namespace="ns", name="h", status=dict),
    "patch_annotations": lambda k: k.patch_annotations(
        plural="environments", namespace="ns", name="e", annotations={}
    ),
    "list_uids": lambda k: k.list_uids("webhooks", "ns"),
    "probe": lambda k: k.probe(None),
    "read_secret": lambda k: k.read_secret("ns", "s"),
    "read_namespace_labels": lambda k: k.read_namespace_labels("ns"),
    "read_lease": lambda k: k.read_lease("herald-system", "herald"),
    "write_lease": lambda k: k.write_lease("herald-system", "herald", {}, create=False),
    "create_event": lambda k: k.create_event("default", {}),
    "can_list": lambda k: k.can_list("apps/v1", "deployments", "ns"),
    "create": lambda k: k.create("deliveries", "ns", {}),
    "get": lambda k: k.get("deliveries", "ns", "d"),
    "patch": lambda k: k.patch("deliveries", "ns", "d", {}),
    "delete": lambda k: k.delete("deliveries", "ns", "d"),
}
# The streams (async generators) each method above may not cover.
STREAMS: list[Callable[[KubeClient], AsyncIterator[Any]]] = [
    lambda k: k.pages("deliveries", "ns"),
    lambda k: k.watch("deliveries", "ns", resource_version=None),
    lambda k: k.pages("environments", None),  # listwatch
    lambda k: k.watch("environments", None, resource_version=None),
]
# The same methods with the other values they are called with.
OTHER_USES: list[Callable[[KubeClient], Awaitable[Any]]] = [
    lambda k: k.patch_status(plural="clusterwebhooks", namespace=None, name="h", status=dict),
    lambda k: k.list_uids("clusterwebhooks", None),
    lambda k: k.write_lease("herald-system", "herald", {}, create=True),
    lambda k: k.patch_status(plural="environments", namespace="ns", name="e", status=dict),
    lambda k: k.can_list("argoproj.io/v1alpha1", "applications", None),
    lambda k: k.can_list("kustomize.toolkit.fluxcd.io/v1", "kustomizations", None),
]


def test_every_public_method_is_exercised_here() -> None:
    public = {
        name
        for name, member in inspect.getmembers(KubeClient, inspect.iscoroutinefunction)
        if not name.startswith("_") and name != "aclose"
    }
    assert public == set(EVERY_METHOD), "a new KubeClient method needs its line in EVERY_METHOD"
    streams = {name for name, _ in inspect.getmembers(KubeClient, inspect.isasyncgenfunction)}
    assert streams == {"pages", "watch"}, "a new KubeClient stream needs its line in STREAMS"


async def test_every_request_is_a_call_of_the_table_and_every_call_is_made() -> None:
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=b"" if "watch" in request.url.params else b"{}")

    async def login() -> ApiConnection:
        return ApiConnection(server="https://api.example")

    kube = KubeClient(login, transport=httpx.MockTransport(handle))
    for use in [*EVERY_METHOD.values(), *OTHER_USES]:
        await use(kube)
    for stream in STREAMS:
        async for _ in stream(kube):
            pass
    await kube.aclose()
    made = {call_of(r) for r in requests}
    table = {(c.api_version, c.resource, c.verb) for c in HERALD_CALLS}
    assert made <= table, f"requests not in herald/rbac.py: {sorted(made - table)}"
    assert table <= made, f"entries of herald/rbac.py no method makes: {sorted(table - made)}"


def test_a_call_outside_the_table_cannot_be_built() -> None:
    with pytest.raises(LookupError, match=r"not in herald\.rbac"):
        find("v1", "secrets", "list")
