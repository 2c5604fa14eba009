"""The sources' kopf shell without kopf running: reading spec.source, and writing only what changed."""

from __future__ import annotations

from typing import Any

import pytest

from herald.kube import ApiInvalid, ApiNotFound, ApiServerError
from herald.source_handlers import EnvironmentView, SourceWriter, read_source
from herald.sources import Verdict


class FakeKube:
    """Answers patch_status from a script of errors (None: success) and records what was sent."""

    def __init__(self, *script: Exception | None) -> None:
        self.script = list(script)
        self.sent: list[dict[str, Any]] = []

    async def patch_status(self, *, plural: str, namespace: str | None, name: str, status: Any) -> None:
        self.sent.append({"plural": plural, "namespace": namespace, "name": name, "status": status()})
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


def view(status: dict[str, Any] | None = None) -> EnvironmentView:
    result = read_source(
        {
            "metadata": {"name": "web", "namespace": "team-a", "uid": "u1", "generation": 2},
            "spec": {"source": {"fluxKustomization": {"name": "shop"}}},
            "status": status or {},
        }
    )
    assert isinstance(result, EnvironmentView)
    return result


TRACKING = Verdict({"id": "d1", "currentStatus": "DEPLOYING"}, ("True", "Tracking", "follows x"))


def writer(kube: FakeKube) -> SourceWriter:
    return SourceWriter(lambda: kube)  # type: ignore[arg-type,return-value]


async def test_same_decision_twice_is_written_once() -> None:
    kube = FakeKube()
    w = writer(kube)
    await w.apply(view(), lambda: TRACKING)
    await w.apply(view(), lambda: TRACKING)  # the watch has not shown the first write yet
    assert len(kube.sent) == 1
    assert kube.sent[0]["plural"] == "environments"
    assert kube.sent[0]["status"]["deployment"]["id"] == "d1"


@pytest.mark.parametrize(
    "error",
    [
        ApiNotFound("gone", status=404),
        ApiInvalid("schema", status=422),
        ApiServerError("etcd", status=500),  # what the client still raises after its own retries
    ],
)
async def test_a_failed_write_is_not_remembered(error: Exception) -> None:
    """The client retries what may cure itself; the writer tries again at the next event."""
    kube = FakeKube(error)
    w = writer(kube)
    await w.apply(view(), lambda: TRACKING)
    assert len(kube.sent) == 1
    await w.apply(view(), lambda: TRACKING)  # a later event tries again
    assert len(kube.sent) == 2


async def test_removing_the_source_clears_only_the_condition() -> None:
    kube = FakeKube()
    mine = {
        "type": "SourceReady",
        "status": "True",
        "reason": "Tracking",
        "message": "",
        "lastTransitionTime": "t",
    }
    await writer(kube).clear("team-a", "web", "u1", {"conditions": [mine], "deployment": {"id": "d1"}})
    assert kube.sent[0]["status"] == {"conditions": []}
    await writer(kube).clear("team-a", "web", "u1", {"deployment": {"id": "d1"}})
    assert len(kube.sent) == 1


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ({"deployments": {"selector": {}}}, ("deployments", "team-a")),
        (
            {"argoCDApplication": {"name": "shop", "namespace": "argocd"}},
            ("argoCDApplication", "argocd", "shop"),
        ),
        ({"fluxKustomization": {"name": "shop"}}, ("fluxKustomization", "team-a", "shop")),
        ({"fluxHelmRelease": {"name": "api", "namespace": "x"}}, ("fluxHelmRelease", "x", "api")),
    ],
)
def testread_source_points_at_the_watched_object(source: dict[str, Any], target: tuple[str, ...]) -> None:
    body = {"metadata": {"name": "web", "namespace": "team-a", "uid": "u1"}, "spec": {"source": source}}
    result = read_source(body)
    assert isinstance(result, EnvironmentView)
    assert result.target == target


def testread_source_says_what_is_wrong() -> None:
    body = {
        "metadata": {"name": "web", "namespace": "team-a"},
        "spec": {"source": {"argoCDApplication": {"name": "a"}}},
    }
    assert read_source(body) == "spec.source.argoCDApplication.namespace: Field required"
    assert read_source({"metadata": {}, "spec": {"source": {}}}) is None
    assert read_source({"metadata": {}, "spec": {}}) is None
