"""index.py: webhooks by scope, and the startup gate that holds deployment events until every
webhook that exists has come through the watch."""

from __future__ import annotations

import asyncio

from herald.index import WebhookIndex
from herald.models import ObjectRef
from herald.status import WebhookView, parse_webhook

SPEC = {"url": "https://example.com/hook", "kind": "STANDARD", "events": ["DEPLOYMENT_STARTED"]}


def view(name: str, namespace: str | None, uid: str) -> WebhookView:
    meta = {"name": name, "uid": uid, "generation": 1}
    if namespace is not None:
        meta["namespace"] = namespace
    return parse_webhook({"metadata": meta, "spec": SPEC}, cluster=namespace is None)


def names(views: object) -> list[str]:
    return sorted(v.ref.name for v in views)  # type: ignore[attr-defined]


def test_scopes_are_kept_apart() -> None:
    index = WebhookIndex()
    index.put(view("a", "team-a", "u1"))
    index.put(view("b", "team-b", "u2"))
    index.put(view("c", None, "u3"))
    assert names(index.namespaced("team-a")) == ["a"]
    assert names(index.namespaced("team-c")) == []
    assert names(index.cluster()) == ["c"]
    assert len(index) == 3


def test_an_update_replaces_and_a_deletion_removes() -> None:
    index = WebhookIndex()
    index.put(view("a", "team-a", "u1"))
    newer = view("a", "team-a", "u1").model_copy(update={"generation": 2})
    index.put(newer)
    assert [v.generation for v in index.namespaced("team-a")] == [2]
    index.drop(cluster=False, ref=ObjectRef(namespace="team-a", name="a"), uid="u1")
    index.drop(cluster=True, ref=ObjectRef(namespace=None, name="never-there"), uid="u9")
    assert len(index) == 0


async def test_the_gate_opens_when_every_listed_webhook_has_arrived() -> None:
    index = WebhookIndex()
    index.put(view("early", "ns", "u1"))  # arrived before the listing came back
    index.expect({"u1", "u2", "u3"})
    assert not index.ready
    index.put(view("w2", "ns", "u2"))
    assert not index.ready
    index.drop(cluster=True, ref=ObjectRef(namespace=None, name="w3"), uid="u3")  # a deletion counts
    assert index.ready
    await asyncio.wait_for(index.wait_ready(), timeout=1)


async def test_a_later_listing_forgets_webhooks_deleted_unseen() -> None:
    index = WebhookIndex()
    index.expect({"u1", "gone"})
    index.put(view("w1", "ns", "u1"))
    assert not index.ready
    index.expect({"u1"})  # "gone" was deleted before the watch listed it
    assert index.ready


def test_no_webhooks_opens_at_once_and_stays_open() -> None:
    index = WebhookIndex()
    assert not index.ready  # nothing is known before the first listing
    index.expect(set())
    assert index.ready
    index.expect({"late"})  # listings after opening change nothing
    assert index.ready


def test_a_deletion_of_an_older_object_keeps_the_one_recreated_under_its_name() -> None:
    index = WebhookIndex()
    index.put(view("a", "ns", "new-uid"))
    assert not index.drop(cluster=False, ref=ObjectRef(namespace="ns", name="a"), uid="old-uid")
    assert names(index.namespaced("ns")) == ["a"]
    assert index.drop(cluster=False, ref=ObjectRef(namespace="ns", name="a"), uid="new-uid")
    assert names(index.views()) == []


def test_reads_are_snapshots_that_changes_leave_alone() -> None:
    """A handler that awaits between reading and using the webhooks must not see them change."""
    index = WebhookIndex()
    index.put(view("c1", None, "u1"))
    index.put(view("n1", "ns", "u2"))
    cluster, namespaced, every = index.cluster(), index.namespaced("ns"), index.views()
    index.put(view("c2", None, "u3"))
    index.drop(cluster=False, ref=ObjectRef(namespace="ns", name="n1"), uid="u2")
    assert names(cluster) == ["c1"]
    assert names(namespaced) == ["n1"]
    assert names(every) == ["c1", "n1"]
    assert names(index.views()) == ["c1", "c2"]
