"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager
as local processes, TLS on 127.0.0.1, RBAC on, with kubeconfigs shaped the way users have them.

The binaries come from ``HERALD_CONTROL_PLANE_BIN`` (a directory with ``kube-apiserver``,
``kube-controller-manager`` and optionally ``etcd``, such as kubebuilder envtest's assets) or are
built once per machine from Debian's sources by ``build-control-plane.sh`` and cached outside the
clone. etcd comes from that directory or from PATH (Debian's ``etcd-server``).

What a real server checks and the emulator does not: CRD schemas (structural, pruning, defaults),
integer ``timeoutSeconds``, TLS and client certificates, bearer tokens, RBAC for Herald's own
ServiceAccount, resourceVersion conflicts, request size limits, the status subresource, Leases,
Events, and ownerReferences garbage collection (kube-controller-manager runs the namespace and
garbagecollector controllers). What it cannot stage on demand (429, 5xx, a watch cut with 410)
comes from ``faultproxy``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import trustme
import yaml

HERE = pathlib.Path(__file__).resolve().parent
BIN_VARIABLE = "HERALD_CONTROL_PLANE_BIN"
ADMIN_TOKEN_USER = "herald-tests-admin"
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port free on IPv6 and IPv4 alike (held dual-stack for a moment, as Herald listens), or on
    IPv4 where the host has no IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
    except OSError:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    with sock:
        port: int = sock.getsockname()[1]
        return port


def binaries() -> pathlib.Path:
    """The directory holding kube-apiserver and kube-controller-manager: given, or built once."""
    given = os.environ.get(BIN_VARIABLE)
    if given:
        folder = pathlib.Path(given)
        missing = [b for b in ("kube-apiserver", "kube-controller-manager") if not (folder / b).is_file()]
        if missing:
            raise RuntimeError(f"{BIN_VARIABLE}={given} lacks {', '.join(missing)}")
        return folder
    done = subprocess.run(
        ["bash", str(HERE / "build-control-plane.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            "no real kube-apiserver for the tests: build-control-plane.sh failed:\n"
            + done.stderr[-3000:]
            + f"\nSet {BIN_VARIABLE} to a directory with kube-apiserver, kube-controller-manager and etcd."
        )
    return pathlib.Path(done.stdout.strip().splitlines()[-1])


def etcd_binary(folder: pathlib.Path) -> str:
    local = folder / "etcd"
    if local.is_file():
        return str(local)
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError(f"no etcd: put one in {folder} or install Debian's etcd-server")
    return found


@dataclass
class ControlPlane:
    """A running control plane; ``kubeconfig`` is a kind-style admin config (embedded data)."""

    folder: pathlib.Path
    server: str
    ca_pem: bytes
    kubeconfig: pathlib.Path
    admin_token: str
    processes: dict[str, subprocess.Popen[bytes]]

    # ------------------------------------------------------------------ kubeconfigs

    def ca_file(self) -> pathlib.Path:
        path = self.folder / "ca.crt"
        if not path.exists():
            path.write_bytes(self.ca_pem)
        return path

    def token_kubeconfig(self, token: str, *, name: str, server: str | None = None) -> pathlib.Path:
        """In-cluster style: a bearer token and a CA file on disk (no CA for a plain-HTTP server)."""
        path = self.folder / f"{name}.kubeconfig"
        server = server or self.server
        cluster = {"server": server}
        if server.startswith("https://"):
            cluster["certificate-authority"] = str(self.ca_file())
        path.write_text(yaml.safe_dump(_config(cluster, {"token": token})))
        return path

    def service_account_token(self, namespace: str, name: str, *, seconds: int = 3600) -> str:
        """A token for a ServiceAccount through the TokenRequest API, as the kubelet gets one."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        return str(answer["status"]["token"])

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A blocking admin call, for fixtures only."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        with urllib.request.urlopen(req, context=context, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def kubectl(self, *args: str, kubeconfig: pathlib.Path | None = None, check: bool = True) -> str:
        done = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout if check else done.stdout + done.stderr

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _config(cluster: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "herald-test", "cluster": cluster}],
        "users": [{"name": "herald-test", "user": user}],
        "contexts": [{"name": "herald-test", "context": {"cluster": "herald-test", "user": "herald-test"}}],
        "current-context": "herald-test",
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wait_healthy(server: str, ca_pem: bytes, token: str, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while starting")
        req = urllib.request.Request(server + "/readyz")
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=context, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"kube-apiserver not ready in {START_TIMEOUT} s: {last}")


def start() -> ControlPlane:
    """etcd on tmpfs, then kube-apiserver, then kube-controller-manager; ready in a few seconds."""
    folder_bin = binaries()
    shm = pathlib.Path("/dev/shm")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="herald-cp-", dir=shm if shm.is_dir() else None))
    ca = trustme.CA(organization_name="herald-tests")
    serving = ca.issue_cert(
        "127.0.0.1", "localhost", "::1", "kubernetes.default.svc", common_name="kube-apiserver"
    )
    admin = ca.issue_cert(
        "herald-tests-admin", common_name="herald-tests-admin", organization_name="system:masters"
    )
    ca_pem = ca.cert_pem.bytes()
    (folder / "ca.crt").write_bytes(ca_pem)
    (folder / "ca.key").write_bytes(ca.private_key_pem.bytes())
    serving.private_key_and_cert_chain_pem.write_to_path(str(folder / "serving.pem"))
    serving.cert_chain_pems[0].write_to_path(str(folder / "serving.crt"))
    serving.private_key_pem.write_to_path(str(folder / "serving.key"))
    # The service-account signing key: any RSA key; the serving key is one.
    token = base64.b32encode(os.urandom(20)).decode().lower()
    (folder / "tokens.csv").write_text(f'{token},{ADMIN_TOKEN_USER},1,"system:masters"\n')

    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    logs = folder / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, argv: list[str]) -> None:
        log = (logs / f"{name}.log").open("wb")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    spawn(
        "etcd",
        [
            etcd_binary(folder_bin),
            f"--data-dir={folder / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--log-level=warn",
        ],
    )
    server = f"https://127.0.0.1:{api_port}"
    spawn(
        "kube-apiserver",
        [
            str(folder_bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={folder / 'certs'}",
            f"--tls-cert-file={folder / 'serving.crt'}",
            f"--tls-private-key-file={folder / 'serving.key'}",
            f"--client-ca-file={folder / 'ca.crt'}",
            f"--token-auth-file={folder / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={folder / 'serving.key'}",
            f"--service-account-signing-key-file={folder / 'serving.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--v=0",
        ],
    )
    admin_config = _config(
        {"server": server, "certificate-authority-data": _b64(ca_pem)},
        {
            "client-certificate-data": _b64(admin.cert_chain_pems[0].bytes()),
            "client-key-data": _b64(admin.private_key_pem.bytes()),
        },
    )
    kubeconfig = folder / "admin.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(admin_config))
    try:
        _wait_healthy(server, ca_pem, token, procs)
        spawn(
            "kube-controller-manager",
            [
                str(folder_bin / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--controllers=namespace,garbagecollector,serviceaccount,deployment,replicaset",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
        )
    except BaseException:
        ControlPlane(folder, server, ca_pem, kubeconfig, token, procs).stop()
        raise
    return ControlPlane(folder, server, ca_pem, kubeconfig, token, procs)


@contextlib.contextmanager
def running() -> Iterator[ControlPlane]:
    plane = start()
    try:
        yield plane
    finally:
        plane.stop()
