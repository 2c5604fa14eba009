"""Herald's image, built from the Dockerfile and run the way deploy/deployment.yaml runs it
(non-root, read-only root file system, no capabilities, in-cluster credentials), against the real
API server: it must deliver."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from herald.testing import Receiver, project_root, wait_for
from tests.cluster.controlplane import ControlPlane, free_port
from tests.cluster.docker import engine

from .conftest import HERALD_NAMESPACE, apply, environment, eventually, move, webhook

IMAGE = f"herald:test-{uuid.uuid4().hex[:6]}"
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "README.md")
MACHINE_CA = pathlib.Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))


def docker(*args: str, timeout: float = 600) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the engine's classic builder: no buildx plugin needed
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:2])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    with engine():
        base = subprocess.run(
            ["bash", str(project_root() / "tests" / "cluster" / "build-base-image.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        with tempfile.TemporaryDirectory(prefix="herald-image-") as context:
            for name in CONTEXT_FILES:
                shutil.copy(project_root() / name, context)
            shutil.copytree(
                project_root() / "operator",
                pathlib.Path(context) / "operator",
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
            if MACHINE_CA.is_file():  # this machine's TLS-inspecting proxy, for pip in the builder
                shutil.copy(MACHINE_CA, pathlib.Path(context) / "pip-ca.pem")
            docker(
                "build", "--network=host", "-q", "-t", IMAGE, "--build-arg", f"PYTHON_IMAGE={base}", context
            )
        try:
            yield IMAGE
        finally:
            subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True, check=False)


def test_the_image_ships_no_api_emulator(image: str) -> None:
    """kmock is the demo's and the tests' extra: the image has none, and says what demo needs."""
    probe = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", "import kmock"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0
    assert "No module named 'kmock'" in probe.stderr
    demo = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "herald", image, "demo"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert demo.returncode == 2
    assert "herald[demo]" in demo.stderr


def _container_settings() -> tuple[dict[str, Any], dict[str, str]]:
    """The Deployment's container: its securityContext and its env (fieldRefs resolved)."""
    deployment = yaml.safe_load((project_root() / "deploy" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = HERALD_NAMESPACE
    return container["securityContext"], env


async def test_the_image_delivers_as_the_deployment_runs_it(
    installed: ControlPlane, namespace: str, receiver: Receiver, image: str
) -> None:
    security, env = _container_settings()
    assert security["readOnlyRootFilesystem"]
    assert security["runAsNonRoot"]
    # What the kubelet mounts for the ServiceAccount, readable by the container's user.
    secrets = pathlib.Path(tempfile.mkdtemp(prefix="herald-sa-"))
    (secrets / "token").write_text(installed.service_account_token(HERALD_NAMESPACE, "herald"))
    (secrets / "ca.crt").write_bytes(installed.ca_pem)
    (secrets / "namespace").write_text(HERALD_NAMESPACE)
    for path in (secrets, *secrets.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    health, metrics = free_port(), free_port()
    env.update(
        {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": installed.server.rsplit(":", 1)[1],
            "HERALD_HEALTH_PORT": str(health),
            "HERALD_METRICS_PORT": str(metrics),
            "HERALD_EGRESS_ALLOW": "127.0.0.0/8",  # the receiver on this machine's loopback
            "HERALD_LEASE_NAME": f"herald-image-{namespace}",
        }
    )
    await apply(installed, webhook("hook", namespace, f"{receiver.url}/image"), environment("env", namespace))
    name = f"herald-{namespace}"
    args = ["run", "-d", "--name", name, "--network=host", "--read-only", "--tmpfs", "/tmp:rw,size=64m"]
    args += ["--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--cap-drop", "ALL"]
    args += ["--security-opt", "no-new-privileges"]
    args += ["-v", f"{secrets}:/var/run/secrets/kubernetes.io/serviceaccount:ro"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    docker(*args, image)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health}", trust_env=False) as http:

            async def ready() -> bool:
                state = json.loads(docker("inspect", name))[0]["State"]
                if not state["Running"]:
                    logs = subprocess.run(
                        ["docker", "logs", name], capture_output=True, text=True, check=False
                    )
                    output = logs.stdout[-3000:] + logs.stderr[-3000:]
                    raise AssertionError(f"the container exited: {output}")
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            try:
                await eventually(ready, timeout=90, what="the container's /readyz")
            except TimeoutError as exc:
                logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
                raise AssertionError(f"{exc}; its log: {logs.stdout[-3000:]}{logs.stderr[-3000:]}") from None
            for state in ("QUEUED", "DEPLOYED"):
                await move(installed, namespace, "env", "d-1", state)
            await wait_for(
                lambda: len(receiver.on("/image")) >= 2, timeout=60, what="deliveries from the image"
            )
            assert [r.json()["event_type"] for r in receiver.on("/image")] == [
                "DEPLOYMENT_STARTED",
                "DEPLOYMENT_SUCCESSFUL",
            ]
            assert "herald_deliveries_total" in (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
        inspected = json.loads(docker("inspect", name))[0]
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert inspected["Config"]["User"] == "65532:65532"
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
        lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.startswith("{")]
        assert lines  # HERALD_LOG_FORMAT=json
        assert all("level" in json.loads(line) for line in lines)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        shutil.rmtree(secrets, ignore_errors=True)
