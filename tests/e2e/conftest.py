"""Fixtures of the opt-in real-cluster suite: a reachable cluster or a clear skip, Herald's CRDs,
the examples in a namespace of their own, ``herald run`` as a local process, a local receiver.

Everything the suite creates carries a random suffix and is deleted afterwards, except the CRDs
(deleting a CRD deletes every object of its kind, other people's included).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import yaml

from herald.testing import Receiver, load_manifests, project_root
from tests.cluster.controlplane import ControlPlane, free_port

E2E_VARIABLE = "HERALD_E2E"
EXAMPLES_NAMESPACE = "demo"  # the namespace deploy/examples live in; the suite uses its own
SELECTOR_LABEL = "herald.dev/e2e"  # narrows the example ClusterWebhook to the suite's namespace
KUBECTL_TIMEOUT = 60.0


def kubectl(*args: str) -> str:
    """Run kubectl, blocking: for fixtures, while nothing waits on the event loop; fail with its stderr."""
    done = subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, timeout=KUBECTL_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


async def kubectl_async(*args: str) -> str:
    """Run kubectl without blocking the event loop the local receiver answers from."""
    proc = await asyncio.create_subprocess_exec(
        "kubectl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=KUBECTL_TIMEOUT)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    """The current context of KUBECONFIG with ``HERALD_E2E=1``; otherwise the tests' own real
    control plane (tests/cluster), so ``make test`` runs this suite too, never skipping it."""
    if os.environ.get(E2E_VARIABLE, "").lower() not in ("1", "true", "yes"):
        plane: ControlPlane = request.getfixturevalue("control_plane")
        before = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)  # kubectl here and `herald run` below
        try:
            yield kubectl("config", "current-context").strip()
        finally:
            if before is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = before
        return
    if shutil.which("kubectl") is None:
        raise AssertionError("HERALD_E2E=1 needs kubectl on PATH")
    where = os.environ.get("KUBECONFIG", "~/.kube/config")
    probe = subprocess.run(
        ["kubectl", "version", "--request-timeout=5s"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        raise AssertionError(
            f"HERALD_E2E=1 but no cluster reachable through KUBECONFIG={where}: {probe.stderr.strip()[-300:]}"
        )
    yield kubectl("config", "current-context").strip()


def apply_flags() -> tuple[str, ...]:
    """Before Kubernetes 1.25 kubectl checks objects against the server's OpenAPI itself, which
    does not know the CRDs' CEL rules (the server drops them): skip that client-side check there."""
    version = json.loads(kubectl("version", "-o", "json"))["serverVersion"]
    minor = int("".join(c for c in version["minor"] if c.isdigit()) or 0)
    return ("--validate=false",) if (int(version["major"]), minor) < (1, 25) else ()


@pytest.fixture(scope="session")
def crds(cluster: str) -> None:
    """Herald's CRDs applied (upgraded in place if already there) and established."""
    folder = project_root() / "crds"
    kubectl("apply", *apply_flags(), "-k", str(folder))
    names = [f"crd/{doc['metadata']['name']}" for doc in load_manifests(folder)]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@dataclasses.dataclass(frozen=True)
class Examples:
    """deploy/examples as applied: their names, secrets, and where each webhook delivers."""

    namespace: str
    environment: str
    standard: str  # the STANDARD Webhook
    slack: str  # the SLACK Webhook
    audit: str  # the ClusterWebhook
    shared_secret: str  # sent as Qovery-Secret
    signing_key: str  # Standard Webhooks key
    paths: dict[str, str]  # webhook name -> path on the local receiver


def rewrite(
    docs: list[dict[str, Any]], base_url: str, *, suffix: str
) -> tuple[list[dict[str, Any]], Examples]:
    """The examples in namespace ``herald-e2e-<suffix>``, delivering to ``base_url``."""
    namespace = f"herald-e2e-{suffix}"
    out = copy.deepcopy(docs)
    names: dict[str, str] = {}
    paths: dict[str, str] = {}
    secret: dict[str, str] = {}
    for doc in out:
        meta, kind, spec = doc["metadata"], doc["kind"], doc.get("spec") or {}
        if meta.get("namespace") == EXAMPLES_NAMESPACE:
            meta["namespace"] = namespace
        if kind == "Namespace":
            meta["name"] = namespace
            meta.setdefault("labels", {})[SELECTOR_LABEL] = suffix
        elif kind == "Secret":  # the SLACK example's URL comes from here
            secret = doc["stringData"]
            secret["url"] = f"{base_url}/slack/{meta['name']}"
        elif kind == "Webhook":
            names[spec["kind"]] = meta["name"]
        elif kind == "ClusterWebhook":
            meta["name"] = f"{meta['name']}-{suffix}"
            names["audit"] = meta["name"]
            spec["secretRef"]["namespace"] = namespace
            spec["namespaceSelector"] = {"matchLabels": {SELECTOR_LABEL: suffix}}
        if kind in ("Webhook", "ClusterWebhook") and "url" in spec:
            spec["url"] = f"{base_url}/{kind.lower()}/{meta['name']}"
    for doc in out:
        spec = doc.get("spec") or {}
        if "url" in spec:
            paths[doc["metadata"]["name"]] = spec["url"].removeprefix(base_url)
        elif "urlSecretRef" in spec:
            paths[doc["metadata"]["name"]] = secret["url"].removeprefix(base_url)
    examples = Examples(
        namespace=namespace,
        environment=next(d for d in out if d["kind"] == "Environment")["metadata"]["name"],
        standard=names["STANDARD"],
        slack=names["SLACK"],
        audit=names["audit"],
        shared_secret=secret["secret"],
        signing_key=secret["signingKey"],
        paths=paths,
    )
    return out, examples


@pytest.fixture
def examples(crds: None, receiver: Receiver) -> Iterator[Examples]:
    examples_dir = project_root() / "deploy" / "examples"
    docs, applied = rewrite(load_manifests(examples_dir), receiver.url, suffix=uuid.uuid4().hex[:8])
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as manifest:
        yaml.safe_dump_all(docs, manifest)
    try:
        kubectl("apply", *apply_flags(), "-f", manifest.name)
        yield applied
    finally:
        kubectl("delete", "clusterwebhook", applied.audit, "--ignore-not-found")
        kubectl("delete", "namespace", applied.namespace, "--ignore-not-found", "--wait=false")
        pathlib.Path(manifest.name).unlink()


@pytest.fixture
async def herald(examples: Examples) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``herald run`` on this machine (no image needed), watching the suite's namespace only."""
    health = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")},
        "HERALD_NAMESPACE": examples.namespace,
        # The ClusterWebhook's Delivery objects too: the suite's namespace exists and goes afterwards.
        "HERALD_DELIVERY_NAMESPACE": examples.namespace,
        "HERALD_EGRESS_ALLOW": "127.0.0.0/8",  # the local receiver
        "HERALD_HEALTH_PORT": str(health),
        "HERALD_METRICS_PORT": "0",
        "HERALD_STATUS_INTERVAL": "0.2",
        "HERALD_RETRY_SCHEDULE": "1,2,4",
        "HERALD_LOG_LEVEL": "INFO",
    }
    log = tempfile.NamedTemporaryFile(prefix="herald-e2e-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "herald.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health}", trust_env=False) as http:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"herald run exited:\n{pathlib.Path(log.name).read_text()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"herald run not ready in 60 s (log: {log.name})")
                await asyncio.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"herald run log: {log.name}")  # pytest shows it when a test fails


def webhooks_json(text: str) -> dict[str, dict[str, Any]]:
    """``kubectl get ... -o json`` as name -> object."""
    return {item["metadata"]["name"]: item for item in json.loads(text).get("items", [])}
