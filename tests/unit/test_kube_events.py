"""kube_events.py: Events in the form kube-apiserver accepts and `kubectl describe` finds: a
ClusterWebhook's with an involvedObject without a namespace and no eventTime, in `default`; a
namespaced object's in its own namespace."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from herald.kube_events import EVENT_NAMESPACE, POSTS_IN_FLIGHT, EventPoster, object_event

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
META = {
    "apiVersion": "herald.dev/v1alpha1",
    "kind": "ClusterWebhook",
    "metadata": {"name": "audit", "uid": "u-1"},
}


def test_the_event_names_no_namespace_and_lives_in_default() -> None:
    body = object_event(
        META, type_="Warning", reason="DeliveryFailed", message="x" * 5000, now=NOW, component="herald"
    )
    assert body["metadata"]["namespace"] == EVENT_NAMESPACE == "default"
    assert body["involvedObject"] == {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ClusterWebhook",
        "name": "audit",
        "uid": "u-1",
    }
    # The API server pairs an involvedObject without namespace with `default` only in the
    # core/v1 form: no eventTime (and then no reportingInstance/action requirements).
    assert "eventTime" not in body
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-01-01T12:00:00Z"
    assert body["source"] == {"component": "herald"}
    assert len(body["message"]) == 1024
    assert body["metadata"]["name"].startswith("audit.")


def test_a_namespaced_objects_event_lives_in_its_namespace() -> None:
    meta = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-2"},
    }
    body = object_event(
        meta, type_="Normal", reason="DeploymentStarted", message="m", now=NOW, component="herald"
    )
    assert body["metadata"]["namespace"] == "shop"
    assert body["involvedObject"] == {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "name": "web",
        "namespace": "shop",
        "uid": "u-2",
    }


def test_two_events_of_one_instant_have_two_names() -> None:
    first, second = (
        object_event(META, type_="Normal", reason="R", message="m", now=NOW, component="herald")
        for _ in (1, 2)
    )
    assert first["metadata"]["name"] != second["metadata"]["name"]


async def test_a_refused_post_is_logged_and_bounded() -> None:
    posted: list[tuple[str, Mapping[str, Any]]] = []
    release = asyncio.Event()

    async def create(namespace: str, body: Mapping[str, Any]) -> None:
        await release.wait()
        posted.append((namespace, body))
        raise ConnectionError("refused")  # logged, never raised to the caller

    poster = EventPoster(create, component="herald", wallclock=lambda: NOW)
    for n in range(POSTS_IN_FLIGHT + 8):
        poster.post(META, "Normal", f"R{n}", "m")
    release.set()
    await poster.close()
    assert len(posted) == POSTS_IN_FLIGHT  # the rest were dropped, not queued without bound
    assert {ns for ns, _ in posted} == {"default"}
