"""The emulator answers lists and watches as kube-apiserver does (label selectors, pages), and
KubeClient reads Herald's own kinds from it: the Delivery kind from a CRD it is given."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import yaml

from herald.kube import ApiClientError, ApiConnection, KubeClient
from herald.testing import Emulator, emulator, label_selector, wait_for

DELIVERY_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "deliveries.herald.dev"},
    "spec": {
        "group": "herald.dev",
        "scope": "Namespaced",
        "names": {"kind": "Delivery", "plural": "deliveries", "singular": "delivery", "shortNames": ["hdl"]},
        "versions": [{"name": "v1alpha1", "served": True, "storage": True}],  # no status subresource
    },
}
RESOURCE = "herald.dev/v1alpha1/deliveries"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with emulator() as e:
        e.declare([DELIVERY_CRD])
        yield e


@pytest.fixture
async def kube(emu: Emulator) -> AsyncIterator[KubeClient]:
    async def login() -> ApiConnection:
        return ApiConnection(server=emu.url)

    client = KubeClient(login)
    yield client
    await client.aclose()


def delivery(namespace: str, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    meta = {"namespace": namespace, "name": name, "labels": dict(labels), "uid": f"uid-{namespace}-{name}"}
    return {"apiVersion": "herald.dev/v1alpha1", "kind": "Delivery", "metadata": meta, "spec": {}}


def store(emu: Emulator, obj: dict[str, Any]) -> None:
    """Into the emulator's memory directly: a thousand POSTs would measure kmock's request log."""
    emu.kmock.objects[RESOURCE, obj["metadata"]["namespace"], obj["metadata"]["name"]] = obj


def names(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]


async def test_1200_objects_in_pages_of_500_with_a_selector(emu: Emulator, kube: KubeClient) -> None:
    objects = []
    for i in range(1200):
        labels = {
            "herald.dev/webhook": f"hook-{i % 3}",
            "herald.dev/outcome": "Failed" if i % 25 == 0 else "Pending",
        }
        if i % 40 != 1:
            labels["app.kubernetes.io/managed-by"] = "herald"
        objects.append(delivery(f"team-{i % 2}", f"d-{i:04d}", labels))
    for obj in objects:
        store(emu, obj)
    wanted = sorted(
        names(
            [
                o
                for o in objects
                if o["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "herald"
                and o["metadata"]["labels"]["herald.dev/outcome"] != "Failed"
            ]
        )
    )
    assert len(wanted) > 1000  # three pages

    selector = "app.kubernetes.io/managed-by=herald,herald.dev/outcome notin (Failed)"
    pages = [page async for page in kube.pages("deliveries", None, label_selector=selector)]

    assert [len(page) for page in pages] == [500, 500, len(wanted) - 1000]
    assert [item for page in pages for item in names(page)] == wanted  # namespace/name order, once each
    in_one_namespace = [page async for page in kube.pages("deliveries", "team-1", label_selector=selector)]
    assert [item for page in in_one_namespace for item in names(page)] == [
        w for w in wanted if w[0] == "team-1"
    ]
    assert await kube.list_uids("deliveries", "team-0") == {
        f"uid-team-0-d-{i:04d}" for i in range(0, 1200, 2)
    }


async def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(
    emu: Emulator, kube: KubeClient
) -> None:
    store(emu, delivery("ns", "before", {"outcome": "Pending"}))
    store(emu, delivery("ns", "other", {"outcome": "Succeeded"}))
    events: list[tuple[str, str, str]] = []

    async def watch() -> None:
        selector = "outcome in (Pending,Failed)"
        async for type_, obj in kube.watch(
            "deliveries", "ns", resource_version=None, label_selector=selector
        ):
            events.append((type_, obj["metadata"]["name"], obj["metadata"]["labels"].get("outcome", "")))

    watcher = asyncio.create_task(watch())
    try:
        await wait_for(lambda: len(events) >= 1, timeout=10, what="the existing object")
        await emu.create(delivery("ns", "new", {}))  # not picked
        await emu.patch("Delivery", "ns", "new", {"metadata": {"labels": {"outcome": "Pending"}}})
        await emu.patch("Delivery", "ns", "new", {"metadata": {"labels": {"outcome": "Failed"}}})
        await emu.patch("Delivery", "ns", "before", {"metadata": {"labels": {"outcome": "Succeeded"}}})
        await emu.delete("Delivery", "ns", "new")
        await wait_for(lambda: len(events) >= 5, timeout=10, what="the changes")
    finally:
        watcher.cancel()
    assert events == [
        ("ADDED", "before", "Pending"),
        ("ADDED", "new", "Pending"),  # it starts matching
        ("MODIFIED", "new", "Failed"),
        ("DELETED", "before", "Succeeded"),  # it stops matching
        ("DELETED", "new", "Failed"),
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"labelSelector": "a in (x"}, "labelSelector"),
        ({"labelSelector": "a=b,"}, "labelSelector"),
        ({"limit": "5", "continue": "not a token"}, "continue"),
        ({"limit": "many"}, "limit"),
    ],
)
async def test_a_list_the_server_cannot_read_is_a_bad_request(
    emu: Emulator, params: dict[str, str], message: str
) -> None:
    response = await emu.kmock.get(emu.path("Delivery", "ns"), params=params)
    assert response.status == 400
    status = await response.json()
    assert (status["reason"], message in status["message"]) == ("BadRequest", True)


async def test_a_bad_selector_is_a_client_error_in_kube_client(kube: KubeClient) -> None:
    with pytest.raises(ApiClientError, match="400"):
        await anext(kube.pages("deliveries", "ns", label_selector="!"))


async def test_a_crd_file_added_to_the_folder_is_served(tmp_path: pathlib.Path) -> None:
    (tmp_path / "deliveries.yaml").write_text(yaml.safe_dump(DELIVERY_CRD))
    (tmp_path / "kustomization.yaml").write_text("resources: [deliveries.yaml]\n")
    async with emulator(tmp_path) as emu:
        assert emu.plurals["Delivery"] == ("deliveries", True)
        discovery = await (await emu.kmock.get("/apis/herald.dev/v1alpha1")).json()
    served = {r["name"]: r for r in discovery["resources"]}
    assert set(served) == {"deliveries"}  # no status subresource: the CRD declares none
    assert (served["deliveries"]["kind"], served["deliveries"]["shortNames"]) == ("Delivery", ["hdl"])


async def test_every_crd_in_the_project_is_served() -> None:
    crd_dir = pathlib.Path(__file__).resolve().parents[2] / "crds"
    kinds = {
        doc["spec"]["names"]["kind"]
        for path in crd_dir.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    }
    async with emulator() as emu:
        assert kinds <= set(emu.plurals)


@pytest.mark.parametrize(
    ("selector", "labels", "picked"),
    [
        ("", {}, True),
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a!=b", {"a": "c"}, True),
        ("a!=b", {}, True),  # != also holds where the label is absent
        ("a!=b", {"a": "b"}, False),
        ("a in (x, y)", {"a": "y"}, True),
        ("a in (x,y)", {"a": "z"}, False),
        ("a in (x,y)", {}, False),
        ("a notin (x,y)", {"a": "z"}, True),
        ("a notin (x,y)", {}, True),
        ("a notin (x,y)", {"a": "x"}, False),
        ("a", {"a": ""}, True),
        ("a", {"b": "a"}, False),
        ("!a", {"b": "a"}, True),
        ("!a", {"a": "x"}, False),
        ("herald.dev/webhook=hook-1, !herald.dev/redeliver", {"herald.dev/webhook": "hook-1"}, True),
        ("x=1,y in (2),z", {"x": "1", "y": "2"}, False),  # every requirement must hold
        ("a=", {"a": ""}, True),
    ],
)
def test_label_selectors_as_kube_apiserver_reads_them(
    selector: str, labels: dict[str, str], picked: bool
) -> None:
    assert label_selector(selector)(labels) is picked


@pytest.mark.parametrize("selector", ["a in (x", "a=b,", "a b", "a in (x y)", "=b", "a=(b)"])
def test_label_selectors_that_do_not_parse(selector: str) -> None:
    with pytest.raises(ValueError, match=r"parse|invalid|missing"):
        label_selector(selector)
