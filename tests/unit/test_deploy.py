"""What ``kubectl apply -k deploy/`` installs, read the way a security review would.

Renders ``deploy/`` and ``deploy/examples`` with the real ``kubectl kustomize`` and checks least
privilege (no ``*``, Secrets read-only, exactly the rules Herald uses), the pod's hardening,
probes and ports, and that the Deployment, the Dockerfile and ``pyproject.toml`` agree on the
image, the user and the entrypoint.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald.rbac import HERALD_CALLS, KOPF_CALLS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLES = DEPLOY / "examples"
NAMESPACE = "herald-system"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is required to render deploy/ (kubectl kustomize); install it and run again")
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(DEPLOY)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def pod(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    return one(rendered, "Deployment", "herald")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    [found] = pod["containers"]
    return found


# ---------------------------------------------------------------- what gets installed


def test_render_holds_the_crds_exactly_as_in_crds_folder(rendered: list[dict[str, Any]]) -> None:
    files = [
        doc
        for path in sorted((ROOT / "crds").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
    ]
    crds = [d for d in rendered if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crds) == [
        "clusterwebhooks.herald.dev",
        "deliveries.herald.dev",
        "environments.herald.dev",
        "webhooks.herald.dev",
    ]
    by_name = {d["metadata"]["name"]: d for d in crds}
    for doc in files:
        assert by_name[doc["metadata"]["name"]] == doc


def test_render_holds_each_piece_in_herald_system(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(
        (d["kind"], d["metadata"]["name"]) for d in rendered if d["kind"] != "CustomResourceDefinition"
    )
    assert kinds == [
        ("ClusterRole", "herald"),
        ("ClusterRoleBinding", "herald"),
        ("Deployment", "herald"),
        ("Namespace", NAMESPACE),
        ("Role", "herald-leader-election"),
        ("RoleBinding", "herald-leader-election"),
        ("Service", "herald-metrics"),
        ("ServiceAccount", "herald"),
    ]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for doc in rendered:
        assert doc["metadata"].get("namespace") == (None if doc["kind"] in cluster_scoped else NAMESPACE), doc


def test_namespace_enforces_restricted_pod_security(rendered: list[dict[str, Any]]) -> None:
    labels = one(rendered, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kustomization_lists_crds_folder_and_not_the_examples() -> None:
    resources = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert "../crds" in resources
    assert not any("examples" in r for r in resources)


# ---------------------------------------------------------------- RBAC


def rules(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                yield doc["kind"], rule


def grants(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """Every (Role kind, API group, resource, verb) the render grants."""
    return {
        (kind, group, resource, verb)
        for kind, rule in rules(docs)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


ROLE_OF_SCOPE = {"cluster": "ClusterRole", "lease": "Role", "sources": "ClusterRole"}


def needed(*, sources: bool = False) -> set[tuple[str, str, str, str]]:
    """Every (Role kind, API group, resource, verb) derived from the calls Herald and kopf make:
    those of the default install, or (``sources``) those the optional sources component adds."""
    return {
        (ROLE_OF_SCOPE[call.scope], call.group, call.resource, call.verb)
        for call in (*HERALD_CALLS, *KOPF_CALLS)
        if (call.scope == "sources") == sources
    }


def test_rbac_grants_every_call_herald_makes(rendered: list[dict[str, Any]]) -> None:
    missing = needed() - grants(rendered)
    assert not missing, f"calls in herald/rbac.py that deploy/rbac.yaml does not grant: {sorted(missing)}"


def test_rbac_grants_nothing_herald_does_not_call(rendered: list[dict[str, Any]]) -> None:
    unused = grants(rendered) - needed()
    assert not unused, f"grants in deploy/rbac.yaml with no call in herald/rbac.py: {sorted(unused)}"


@pytest.fixture(scope="module")
def with_sources(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """deploy/ plus the optional sources component, as a user's own kustomization would add it."""
    overlay = tmp_path_factory.mktemp("with-sources")
    base = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "components": [f"{base}/components/sources"]})
    )
    return kustomize(overlay)


def test_sources_component_adds_exactly_what_sources_use(
    rendered: list[dict[str, Any]], with_sources: list[dict[str, Any]]
) -> None:
    assert grants(with_sources) - grants(rendered) == needed(sources=True)
    assert grants(rendered) <= grants(with_sources)
    for kind, rule in rules(with_sources):
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, (kind, rule)
        assert not any("*" in value for field in rule.values() for value in field), (kind, rule)
    [binding] = [
        d for d in with_sources if d["metadata"]["name"] == "herald-sources" and d["kind"].endswith("Binding")
    ]
    assert binding["roleRef"]["name"] == "herald-sources"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "herald", "namespace": NAMESPACE}]


def test_sources_component_is_not_in_the_default_install(rendered: list[dict[str, Any]]) -> None:
    assert not [d for d in rendered if d["metadata"]["name"] == "herald-sources"]


def test_rbac_has_no_wildcards(rendered: list[dict[str, Any]]) -> None:
    for kind, rule in rules(rendered):
        # Neither resourceNames nor nonResourceURLs: nothing here but these three.
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, (kind, rule)
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in value for value in rule[field]), (kind, rule)


def test_secrets_are_read_only(rendered: list[dict[str, Any]]) -> None:
    verbs = {verb for _, group, resource, verb in grants(rendered) if group == "" and resource == "secrets"}
    assert verbs <= {"get"}


@pytest.mark.parametrize(
    ("binding", "role"), [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")]
)
def test_bindings_grant_the_roles_to_herald_only(
    rendered: list[dict[str, Any]], binding: str, role: str
) -> None:
    [doc] = [d for d in rendered if d["kind"] == binding]
    [target] = [d for d in rendered if d["kind"] == role]
    assert doc["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role,
        "name": target["metadata"]["name"],
    }
    assert doc["subjects"] == [{"kind": "ServiceAccount", "name": "herald", "namespace": NAMESPACE}]


# ---------------------------------------------------------------- the Deployment


def test_deployment_runs_two_replicas_of_the_versioned_image(
    rendered: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    deployment = one(rendered, "Deployment", "herald")
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == f"herald:{VERSION}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod["serviceAccountName"] == "herald"
    assert pod["automountServiceAccountToken"] is True
    assert "command" not in container, "the image's ENTRYPOINT (herald run) is the command"
    assert "args" not in container, "settings come from HERALD_* variables"


SECURITY = [
    ("pod", ("runAsNonRoot",), True),
    ("pod", ("runAsUser",), 65532),
    ("pod", ("seccompProfile", "type"), "RuntimeDefault"),
    ("container", ("runAsNonRoot",), True),
    ("container", ("runAsUser",), 65532),
    ("container", ("readOnlyRootFilesystem",), True),
    ("container", ("allowPrivilegeEscalation",), False),
    ("container", ("capabilities", "drop"), ["ALL"]),
    ("container", ("seccompProfile", "type"), "RuntimeDefault"),
]


@pytest.mark.parametrize(
    ("level", "path", "expected"), SECURITY, ids=[f"{s[0]}.{'.'.join(s[1])}" for s in SECURITY]
)
def test_security_context(
    pod: dict[str, Any], container: dict[str, Any], level: str, path: tuple[str, ...], expected: Any
) -> None:
    value: Any = (pod if level == "pod" else container)["securityContext"]
    for key in path:
        value = value[key]
    assert value == expected


def test_nothing_adds_privileges(pod: dict[str, Any], container: dict[str, Any]) -> None:
    context = container["securityContext"]
    assert "add" not in context["capabilities"]
    assert not context.get("privileged", False)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key, False)


def test_tmp_is_the_only_writable_path(pod: dict[str, Any], container: dict[str, Any]) -> None:
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/tmp"}
    assert "emptyDir" in volume


@pytest.mark.parametrize(("probe", "path"), [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")])
def test_probes(container: dict[str, Any], probe: str, path: str) -> None:
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert get["path"] == path
    assert ports.get(get["port"], get["port"]) == 8080


def test_ports_and_resources(container: dict[str, Any]) -> None:
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "metrics": 9090}
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def megabytes(quantity: str) -> float:
    """A Kubernetes memory quantity (``512Mi``, ``2Gi``, ``1G``) in MB, as the bench reports."""
    factors = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in factors.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor / 1e6
    return float(quantity) / 1e6


def bench_rss() -> dict[str, float]:
    """``herald run``'s resident memory by scale scenario, in MB, from the last ``make bench``."""
    rss: dict[str, float] = {}
    for line in (ROOT / "bench" / "RESULTS.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[1] == "operator RSS":
            rss[cells[0]] = float(cells[2].removesuffix(" MB").replace(",", ""))
    return rss


def test_memory_fits_what_the_bench_measured(container: dict[str, Any]) -> None:
    rss = bench_rss()
    assert any("retained Deliveries" in scenario for scenario in rss), rss
    request = megabytes(container["resources"]["requests"]["memory"])
    limit = megabytes(container["resources"]["limits"]["memory"])
    # The largest crowd, with room for its startup peak (VmHWM ran 1.1-1.2x the settled RSS).
    assert limit >= 1.25 * max(rss.values())
    # Every crowd measured, history included (it lives in the API server), runs within the request.
    assert request >= max(rss.values())
    assert request < limit


EXPECTED_ENV = {
    "HERALD_ALL_NAMESPACES": "true",
    "HERALD_LOG_FORMAT": "json",
    "HERALD_LOG_LEVEL": "INFO",
    "HERALD_LEADER_ELECTION": "true",
}


def test_environment_configures_herald(container: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert EXPECTED_ENV.items() <= env.items()
    for own in ("HERALD_LEASE_NAMESPACE", "HERALD_DELIVERY_NAMESPACE"):  # the pod's own namespace
        found = next(e for e in container["env"] if e["name"] == own)
        assert found["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    cli = (ROOT / "operator" / "herald" / "cli.py").read_text()
    for name in env:
        assert name.startswith("HERALD_")
        assert f'"{name}"' in cli, f"{name} is not a variable herald run reads"


def test_metrics_service_selects_the_pods(rendered: list[dict[str, Any]]) -> None:
    service = one(rendered, "Service", "herald-metrics")
    labels = one(rendered, "Deployment", "herald")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert annotations["prometheus.io/path"] == "/metrics"


# ---------------------------------------------------------------- the Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), one list per stage."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(pending.strip())
            pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def test_dockerfile_builds_from_the_lock_without_dev_extras() -> None:
    builder, final = dockerfile_stages()
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    runs = " ".join(rest for word, rest in builder if word == "RUN")
    assert "-m venv /opt/venv" in runs
    assert "/opt/venv/bin/pip install -c constraints.txt ." in runs
    assert "[dev]" not in text
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final


def test_dockerfile_runs_herald_as_the_deployments_non_root_user(container: dict[str, Any]) -> None:
    final = dockerfile_stages()[-1]
    [user] = [rest for word, rest in final if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user, so the kubelet can verify runAsNonRoot"
    assert int(uid) != 0
    assert int(uid) == container["securityContext"]["runAsUser"]
    [entrypoint] = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["herald", "run"], "exec form: no shell between the kubelet and herald"
    assert PYPROJECT["project"]["scripts"]["herald"] == "herald.cli:main"
    [expose] = [rest for word, rest in final if word == "EXPOSE"]
    assert sorted(int(p) for p in expose.split()) == sorted(p["containerPort"] for p in container["ports"])
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_dockerignore_keeps_the_context_small_and_the_build_inputs_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", ".git", "tests", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"} <= set(
        patterns
    )
    copied = [
        source
        for stage in dockerfile_stages()
        for word, rest in stage
        if word == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    # pip-ca.pe[m]: a TLS-inspecting proxy's CA, copied only where a builder puts one in the context.
    assert copied == ["pyproject.toml", "constraints.txt", "README.md", "pip-ca.pe[m]", "operator/"]
    for source in copied:
        assert not any(fnmatch.fnmatch(source.rstrip("/"), p) for p in patterns), f"{source} is ignored"


# ---------------------------------------------------------------- the examples


def test_examples_render_in_file_order() -> None:
    files = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
    listed = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())["resources"]
    assert listed == [p.name for p in files], (
        "the demo reads the folder, kubectl the kustomization: keep both"
    )
    from_files = [yaml.safe_load(p.read_text()) for p in files]
    rendered = kustomize(EXAMPLES)
    assert sorted(json.dumps(d, sort_keys=True) for d in rendered) == sorted(
        json.dumps(d, sort_keys=True) for d in from_files
    )
    assert from_files[0]["kind"] == "Namespace", "the namespace sorts first, so `kubectl apply -f` works too"
