"""Fixtures of the real-API-server tier: Herald installed from ``deploy/`` with ``kubectl apply -k``,
a fresh namespace per test, and ``herald run`` as a subprocess with a kubeconfig as users have it.

Herald runs as its own ServiceAccount (token + CA file, the in-cluster shape) with exactly the
RBAC ``deploy/`` ships, unless a test asks for the kind-style admin kubeconfig.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from herald.testing import load_manifests, project_root
from tests.cluster.controlplane import ControlPlane, free_port
from tests.cluster.faultproxy import FaultProxy

HERALD_NAMESPACE = "herald-system"


@pytest.fixture(scope="session")
def installed(control_plane: ControlPlane) -> ControlPlane:
    """``kubectl apply -k deploy/`` as the README says for clusters older than 1.25, CRDs established.

    kubectl checks objects against the server's OpenAPI when the server cannot (before 1.25), and
    that OpenAPI does not know the CEL rules (``x-kubernetes-validations``), which the server drops.
    """
    control_plane.kubectl("apply", "--validate=false", "-k", str(project_root() / "deploy"))
    names = [f"crd/{doc['metadata']['name']}" for doc in load_manifests(project_root() / "crds")]
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return control_plane


@pytest.fixture(scope="session")
def service_account_kubeconfig(installed: ControlPlane) -> pathlib.Path:
    """Herald's ServiceAccount from deploy/: a TokenRequest token and the CA as a file."""
    token = installed.service_account_token(HERALD_NAMESPACE, "herald")
    return installed.token_kubeconfig(token, name="herald-sa")


async def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """kubectl without blocking the event loop the local receiver answers from."""
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={plane.kubeconfig}",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode() if check else out.decode() + err.decode()


async def apply(plane: ControlPlane, *docs: dict[str, Any]) -> None:
    await kubectl(plane, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump_all(docs))


async def get_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(await kubectl(plane, "get", *args, "-o", "json"))


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.3)


@pytest.fixture
def namespace(installed: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    installed.kubectl("create", "namespace", name)
    installed.kubectl("label", "namespace", name, f"herald.dev/test-namespace={name}")
    yield name
    installed.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


class HeraldProcess:
    """``herald run`` with a kubeconfig, settings from HERALD_* variables as in a container."""

    def __init__(self, kubeconfig: pathlib.Path, env: dict[str, str]) -> None:
        self.health = free_port()
        self.metrics = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="herald-real-", suffix=".log", delete=False)  # noqa: SIM115
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "KUBERNETES_"))},
            "KUBECONFIG": str(kubeconfig),
            "HERALD_EGRESS_ALLOW": "127.0.0.0/8",
            "HERALD_RETRY_SCHEDULE": "0.5,1,2",
            "HERALD_RETRY_JITTER": "0",
            "HERALD_DELIVERY_TIMEOUT": "3",
            "HERALD_STATUS_INTERVAL": "0.2",
            "HERALD_HEALTH_PORT": str(self.health),
            "HERALD_METRICS_PORT": str(self.metrics),
            "HERALD_LOG_LEVEL": "DEBUG",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Started again on fresh ports if a port chosen free was taken before Herald bound it
        (the other tiers run beside this one and open ports of their own)."""
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "herald.cli", "run"],
                env=self.env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            try:
                await self.wait_ready()
                return
            except AssertionError:
                if attempt == 2 or self.proc.poll() is None or "Address already in use" not in self.output():
                    raise
            self.health, self.metrics = free_port(), free_port()
            self.env = {
                **self.env,
                "HERALD_HEALTH_PORT": str(self.health),
                "HERALD_METRICS_PORT": str(self.metrics),
            }

    async def wait_ready(self, timeout: float = 60) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.health}", trust_env=False) as http:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise AssertionError(f"herald run exited:\n{self.output()[-5000:]}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"herald run not ready in {timeout} s:\n{self.output()[-5000:]}")
                await asyncio.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log.name).read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


@pytest.fixture
async def fault_proxy(
    installed: ControlPlane, service_account_kubeconfig: pathlib.Path
) -> AsyncIterator[Proxied]:
    """The API server behind a fault-injecting proxy, and Herald's kubeconfig through it.

    Ask for it before ``start_herald``, so Herald stops before the proxy does."""
    token = yaml.safe_load(service_account_kubeconfig.read_text())["users"][0]["user"]["token"]
    proxy = FaultProxy(installed.server, installed.ca_pem)
    await proxy.start()
    kubeconfig = installed.token_kubeconfig(token, name=f"proxied-{uuid.uuid4().hex[:6]}", server=proxy.url)
    yield Proxied(proxy, kubeconfig)
    await proxy.stop()


@dataclasses.dataclass(frozen=True)
class Proxied:
    proxy: FaultProxy
    kubeconfig: pathlib.Path


@pytest.fixture
async def start_herald(
    service_account_kubeconfig: pathlib.Path,
) -> AsyncIterator[Callable[..., Awaitable[HeraldProcess]]]:
    started: list[HeraldProcess] = []

    async def start(kubeconfig: pathlib.Path | None = None, **env: str) -> HeraldProcess:
        herald = HeraldProcess(kubeconfig or service_account_kubeconfig, env)
        started.append(herald)
        await herald.start()
        return herald

    yield start
    for herald in started:
        await herald.stop()
        print(f"herald run log: {herald.log.name}")  # pytest shows it when a test fails


def webhook(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "kind": "STANDARD",
            "events": ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL", "DEPLOYMENT_FAILURE"],
            "url": url,
            **spec,
        },
    }


# `kubectl get deliveries`: a delivery log, as the issue asks (`-o wide` adds NEXT and PAYLOAD).
DELIVERY_COLUMNS = ["NAME", "WEBHOOK", "EVENT", "ENVIRONMENT", "OUTCOME", "ATTEMPTS", "HTTP", "AGE"]


def environment(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "organization": {"name": "Acme"},
            "project": {"name": "shop"},
            "type": "PRODUCTION",
            "applications": [{"name": "web"}],
            **spec,
        },
    }


async def move(
    plane: ControlPlane, namespace: str, name: str, deployment: str, state: str, **extra: Any
) -> None:
    """What a deployment controller does: write the Environment's status.deployment."""
    patch = {
        "status": {
            "deployment": {"id": deployment, "currentStatus": state, "desiredStatus": "DEPLOYED", **extra}
        }
    }
    await kubectl(
        plane,
        "-n",
        namespace,
        "patch",
        "environment",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
