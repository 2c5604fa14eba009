"""``herald demo``: the whole flow with no cluster.

An in-process Kubernetes API emulator (kmock, from ``herald.testing``) gets Herald's CRDs and the
example manifests; a local receiver stands in for the STANDARD, SLACK, CLOUDEVENTS, CUSTOM and
cluster-wide endpoints; the real operator runs against the emulator over real HTTP; Environments
are driven through deployments (one by a simulated Deployment controller) and every delivery is
printed as it arrives, then the webhooks' status as ``kubectl get`` shows it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import sys
import time
from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald.delivery_object import FINISHED
from herald.events import LEDGER_ANNOTATION, derive_events, parse_environment, parse_ledger
from herald.settings import Settings
from herald.testing import (
    Emulator,
    Received,
    Receiver,
    SimulatedDeployment,
    emulator,
    load_manifests,
    project_root,
    running_operator,
    wait_for,
)

__all__ = ["run_demo"]

ROLLOUTS = "shop-frontend-rollouts"  # the Environment whose deployments come from a Deployment

DEMO_SETTINGS = Settings(
    egress_allow=(ipaddress.ip_network("127.0.0.0/8"),),
    retry_schedule=(0.5, 1.0),
    retry_jitter=0.1,
    delivery_timeout=5,
    status_interval=0.5,
    health_port=0,
    metrics_port=0,
    scanning=False,
    sources=("deployments",),
)


def _print(text: str) -> None:
    print(text, flush=True)


def _rewrite_for_demo(docs: list[dict[str, Any]], receiver: Receiver) -> list[dict[str, Any]]:
    """Point every example at the local receiver, one path per webhook."""
    out = []
    for doc in copy.deepcopy(docs):
        kind, name = doc.get("kind"), doc["metadata"]["name"]
        spec = doc.get("spec", {})
        if kind in ("Webhook", "ClusterWebhook") and "url" in spec:
            spec["url"] = f"{receiver.url}/{kind.lower()}/{name}"
        if kind == "Secret":
            for field in ("data", "stringData"):
                values = doc.get(field) or {}
                if "url" in values:
                    local = f"{receiver.url}/slack/{name}"
                    values["url"] = base64.b64encode(local.encode()).decode() if field == "data" else local
        out.append(doc)
    return out


def _status_table(emu: Emulator, webhooks: list[tuple[str, str | None, str]]) -> str:
    rows = [
        (
            "KIND",
            "NAMESPACE",
            "NAME",
            "TYPE",
            "ENABLED",
            "READY",
            "LAST OUTCOME",
            "DELIVERED",
            "FAILED",
            "PENDING",
        )
    ]
    for kind, namespace, name in webhooks:
        obj = emu.get(kind, namespace, name) or {}
        status = obj.get("status") or {}
        ready = next(
            (c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), "Unknown"
        )
        counters = status.get("counters") or {}
        rows.append(
            (
                kind,
                namespace or "-",
                name,
                obj.get("spec", {}).get("kind", "?"),
                str(obj.get("spec", {}).get("enabled", True)).lower(),
                ready,
                (status.get("lastDelivery") or {}).get("outcome", "-"),
                str(counters.get("delivered", 0)),
                str(counters.get("failed", 0)),
                str(status.get("pendingDeliveries", 0)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def _delivery_table(emu: Emulator, namespace: str, webhook: str) -> str:
    """One webhook's delivery log, as ``kubectl get deliveries`` prints it."""
    rows = [("NAME", "WEBHOOK", "EVENT", "ENVIRONMENT", "OUTCOME", "ATTEMPTS", "HTTP")]
    for record in reversed(emu.delivery_log(webhook, namespace)):
        rows.append(
            (
                str(record["name"]),
                webhook,
                str(record["event"]),
                str(record["environment"]).rpartition("/")[2],
                str(record.get("outcome", "")),
                str(record.get("attempts", 0)),
                str(record.get("httpStatus", "")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def _summary(payload: Any) -> str:
    """One line of what arrived, in each kind's own terms."""
    if not isinstance(payload, dict):
        return "?"
    if "specversion" in payload:  # a CloudEvent names itself by its type
        return str(payload.get("type"))[:40]
    if "summary" in payload:
        return f"custom: {payload['summary']}"[:40]
    return str(payload.get("event_type") or f"slack: {payload.get('text', '')}")[:40]


def _signing_keys(docs: list[dict[str, Any]]) -> list[str]:
    keys = []
    for doc in docs:
        if doc.get("kind") == "Secret":
            values = {**(doc.get("stringData") or {})}
            values.update({k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()})
            keys += [v for v in values.values() if v.startswith("whsec_")]
    return keys


def _signature(item: Received, keys: list[str]) -> str:
    """What a receiver would conclude from the Standard Webhooks headers."""
    if "webhook-signature" not in {k.lower() for k in item.headers}:
        return ""
    for key in keys:
        try:
            Webhook(key).verify(item.body, item.headers)
        except WebhookVerificationError:
            continue
        return "signature verified"
    return "SIGNATURE INVALID"


async def run_demo() -> int:
    started = time.monotonic()
    docs = load_manifests(project_root() / "deploy" / "examples")
    keys = _signing_keys(docs)

    def show(item: Received, status: int) -> None:
        event = _summary(item.json())
        elapsed = time.monotonic() - started
        _print(f"  -> {item.path:<34} {event:<40} HTTP {status}  +{elapsed:.2f}s  {_signature(item, keys)}")

    receiver = Receiver(on_request=show)
    await receiver.start()
    try:
        async with emulator() as emu:
            docs = _rewrite_for_demo(docs, receiver)
            _print(f"Kubernetes API emulator at {emu.url}; receiver at {receiver.url}")
            async with running_operator(emu, DEMO_SETTINGS):
                for doc in docs:
                    await emu.create(doc)
                    _print(f"created {doc['kind']}/{doc['metadata']['name']}")
                return await _drive(emu, receiver, docs)
    finally:
        await receiver.stop()


async def _drive(emu: Emulator, receiver: Receiver, docs: list[dict[str, Any]]) -> int:
    env = next(d for d in docs if d["kind"] == "Environment")
    namespace = env["metadata"]["namespace"]
    failing = copy.deepcopy(env)
    failing["metadata"] = {"name": f"{env['metadata']['name']}-canary", "namespace": namespace}
    await emu.create(failing)
    webhooks = [
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for d in docs
        if d["kind"] in ("Webhook", "ClusterWebhook")
    ]
    await asyncio.sleep(0.3)  # let the webhooks' first status land before the storm (cosmetic only)
    script = [
        (env["metadata"]["name"], "deploy-1", ["QUEUED", "DEPLOYING", "DEPLOYED"]),
        (failing["metadata"]["name"], "deploy-2", ["QUEUED", "BUILDING", "DEPLOYMENT_ERROR"]),
    ]
    for name, deployment_id, states in script:
        _print(f"\nEnvironment {namespace}/{name}: deployment {deployment_id}")
        for state in states:
            _print(f"  status.deployment.currentStatus = {state}")
            await emu.deploy(namespace, name, deployment_id, state)
            await asyncio.sleep(0.3)
    try:
        await _rollouts(emu, env)
    except TimeoutError as exc:
        _print(f"\nDEMO FAILED: {exc}")
        return 1

    environments = [env["metadata"]["name"], failing["metadata"]["name"], ROLLOUTS]

    def notified(name: str) -> bool:
        """Every event of the Environment's deployment is recorded as notified (deliveries stored)."""
        body = emu.get("Environment", namespace, name) or {}
        _, _, deployment = parse_environment(body)
        ledger = parse_ledger(((body.get("metadata") or {}).get("annotations") or {}).get(LEDGER_ANNOTATION))
        return deployment is not None and not derive_events(deployment, ledger)

    def settled() -> bool:
        if not all(notified(name) for name in environments):
            return False
        # The Delivery objects first: a delivery held by a rate limit (SLACK's one a second) is a
        # Pending object before a webhook's summary, written at most every interval, counts it.
        for kind, ns, name in webhooks:
            log = emu.delivery_log(name, None if kind == "ClusterWebhook" else ns)
            if any(record.get("outcome") not in FINISHED for record in log):
                return False
        finished = 0
        for kind, ns, name in webhooks:
            status = (emu.get(kind, ns, name) or {}).get("status") or {}
            if status.get("pendingDeliveries"):
                return False
            counters = status.get("counters") or {}
            finished += counters.get("delivered", 0) + counters.get("failed", 0)
        return finished == len(receiver.received) > 0

    try:
        await wait_for(settled, timeout=30, what="every webhook's status to settle")
    except TimeoutError as exc:
        _print(f"\nDEMO FAILED: {exc}")
        _print(_status_table(emu, webhooks))
        return 1
    _print(f"\n{len(receiver.received)} deliveries received.\n\n$ kubectl get webhooks,clusterwebhooks -A")
    _print(_status_table(emu, webhooks))
    _print(f"\n$ kubectl get deliveries -n {namespace} -l herald.dev/webhook=shop-deployments")
    _print(_delivery_table(emu, namespace, "shop-deployments"))
    return 0


async def _rollouts(emu: Emulator, env: Mapping[str, Any]) -> None:
    """The Deployment source: a plain apps/v1 Deployment rolled out, then a rollout that times out."""
    namespace = env["metadata"]["namespace"]
    labels = {"app.kubernetes.io/part-of": "shop-frontend"}
    sourced = copy.deepcopy(dict(env))
    sourced["metadata"] = {"name": ROLLOUTS, "namespace": namespace}
    sourced["spec"]["source"] = {"deployments": {"selector": {"matchLabels": labels}}}
    sourced.pop("status", None)
    await emu.create(sourced)
    name = sourced["metadata"]["name"]
    intro = (
        f"\nEnvironment {namespace}/{name}: spec.source.deployments selects",
        "app.kubernetes.io/part-of=shop-frontend;\n  Herald writes its status.deployment.",
        "The emulator runs no Deployment controller, so the demo\n  writes the controller's",
        "status updates itself (marked 'controller:').",
    )
    _print(" ".join(intro))
    storefront = SimulatedDeployment(
        emu, namespace, "storefront", labels=labels, image="ghcr.io/acme/storefront:1.0"
    )

    async def shown(state: str) -> None:
        def reached() -> bool:
            status = (emu.get("Environment", namespace, name) or {}).get("status") or {}
            return bool((status.get("deployment") or {}).get("currentStatus") == state)

        await wait_for(reached, timeout=10, what=f"Herald to write {state}")
        deployment = (emu.get("Environment", namespace, name) or {})["status"]["deployment"]
        _print(f"  Herald: status.deployment = {deployment['id']} {state}")
        await asyncio.sleep(0.3)  # let the deliveries print under the step that caused them

    _print("  kubectl apply: Deployment storefront, image ghcr.io/acme/storefront:1.0, 2 replicas")
    await storefront.create()
    _print("  controller: new ReplicaSet, 1 of 2 replicas updated")
    await storefront.progress()
    await shown("DEPLOYING")
    _print("  controller: 2 of 2 replicas updated and available")
    await storefront.complete()
    await shown("DEPLOYED")
    _print("  kubectl set image deployment/storefront storefront=ghcr.io/acme/storefront:1.1")
    await storefront.set_image("ghcr.io/acme/storefront:1.1")
    _print("  controller: new ReplicaSet, 1 of 2 replicas updated")
    await storefront.progress()
    await shown("DEPLOYING")
    _print(
        "  controller: Progressing=False, reason ProgressDeadlineExceeded (the new pods never became ready)"
    )
    await storefront.time_out()
    await shown("DEPLOYMENT_ERROR")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(run_demo()))
