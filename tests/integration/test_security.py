"""Issue 4 end to end: signed deliveries, secrets that stay secret, the egress policy, private
CAs and garbage input — the real operator against the emulator and real local receivers."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import json
import logging
import random
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme
from prometheus_client import generate_latest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald.handlers import Runtime
from herald.metrics import Metrics
from herald.models import ObjectRef
from herald.testing import Emulator, Receiver, running_operator, wait_for

from .conftest import (
    FAST,
    NS,
    condition,
    deliveries,
    deploy,
    environment,
    pending,
    secret,
    status_of,
    webhook,
)
from .tls_helpers import HostedReceiver, ScriptedResolver, server_tls

STARTED = ("DEPLOYMENT_STARTED",)
OTHER_NS = "team-b"
# The operator may reach only this loopback address; the shared receiver's 127.0.0.1 is denied.
ALLOWED_HOST = "127.0.0.2"
ONLY_ALLOWED = dataclasses.replace(FAST, egress_allow=(ipaddress.ip_network(f"{ALLOWED_HOST}/32"),))


# ---------------------------------------------------------------- helpers


def signing_key() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def attempts_counted(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("herald_delivery_attempts_total", {"result": result}) or 0.0


def ready_of(emu: Emulator, name: str) -> dict[str, Any]:
    """The Ready condition, read defensively: a garbage status may still be in place."""
    status = (emu.get("Webhook", NS, name) or {}).get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    found = [c for c in conditions or () if isinstance(c, dict) and c.get("type") == "Ready"]
    return dict(found[0]) if found else {}


def reason_is(
    emu: Emulator, name: str, reason: str, *, namespace: str | None = NS, kind: str = "Webhook"
) -> bool:
    return bool(condition(emu, kind, namespace, name).get("reason") == reason)


def generation_of(emu: Emulator, name: str) -> int:
    meta = (emu.get("Webhook", NS, name) or {}).get("metadata", {})
    return int(meta.get("generation", 0))


def refused_port() -> int:
    """A port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def allowed() -> AsyncIterator[HostedReceiver]:
    """A receiver on the one loopback address ONLY_ALLOWED permits."""
    r = HostedReceiver(host=ALLOWED_HOST)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_receiver(ca: trustme.CA) -> AsyncIterator[HostedReceiver]:
    """An HTTPS receiver on 127.0.0.1 whose certificate only the test's private CA vouches for."""
    r = HostedReceiver(tls=server_tls(ca, "127.0.0.1", "localhost"))
    await r.start()
    yield r
    await r.stop()


# ---------------------------------------------------------------- signatures


async def test_every_attempt_is_signed_with_its_own_timestamp(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    key = signing_key()
    await emu.create(secret("keys", {"signingKey": key}))
    await emu.create(webhook("signed", f"{receiver.url}/signed", signingSecretRef={"name": "keys"}))
    # Retry-After is clamped to at least 1 s: the retry's timestamp falls in a later second.
    receiver.scripts["/signed"] = [(503, {"Retry-After": "1"}), 200, 200]
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/signed")) == 2, timeout=10, what="the attempt and its retry")
    await deploy(emu, "web", "d-1", "DEPLOYED")
    await wait_for(lambda: len(receiver.on("/signed")) == 3, timeout=10, what="the second event")

    captured = receiver.on("/signed")
    for item in captured:
        assert Webhook(key).verify(item.body, item.headers) == item.json()
        assert item.headers["webhook-id"] == item.json()["payload_id"]
        with pytest.raises(WebhookVerificationError):
            Webhook(signing_key()).verify(item.body, item.headers)
    first, retry, other = captured
    assert first.body == retry.body
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert int(retry.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert retry.headers["webhook-signature"] != first.headers["webhook-signature"]
    assert other.headers["webhook-id"] != first.headers["webhook-id"]
    assert [r.json()["event_type"] for r in captured] == [
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_SUCCESSFUL",
    ]


async def test_rotation_sends_a_signature_per_key(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    old = signing_key()
    await emu.create(secret("keys", {"signingKey": old}))
    await emu.create(
        webhook("signed", f"{receiver.url}/signed", events=STARTED, signingSecretRef={"name": "keys"})
    )
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/signed")) == 1, timeout=10, what="the delivery before rotation")
    new = signing_key()
    await emu.patch(  # the rotation a person makes: a new key, the old one kept as `previous`
        "Secret", NS, "keys", {"data": secret("keys", {"signingKey": new, "previous": old})["data"]}
    )
    # The Secret is re-read within secret_cache_ttl: keep deploying until a delivery carries both.
    for n in range(2, 30):
        await deploy(emu, "web", f"d-{n}", "QUEUED")
        await wait_for(lambda n=n: len(receiver.on("/signed")) == n, timeout=10, what=f"delivery {n}")
        if " " in receiver.on("/signed")[-1].headers["webhook-signature"]:
            break
    before, after = receiver.on("/signed")[0], receiver.on("/signed")[-1]
    assert " " not in before.headers["webhook-signature"]
    assert Webhook(old).verify(before.body, before.headers)
    signed = after.headers["webhook-signature"].split(" ")
    sent_at = datetime.datetime.fromtimestamp(int(after.headers["webhook-timestamp"]), tz=datetime.UTC)
    msg_id = after.headers["webhook-id"]
    assert signed == [Webhook(k).sign(msg_id, sent_at, after.body.decode()) for k in (new, old)]
    for key in (new, old):
        assert Webhook(key).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing_key()).verify(after.body, after.headers)


BAD_SIGNING_SECRETS = {  # Secret name -> its data, and the key a person must fix
    "no-prefix": ({"signingKey": "not-a-key-{token}"}, "signingKey"),
    "too-short": ({"signingKey": "whsec_{short}"}, "signingKey"),
    "not-base64": ({"signingKey": "whsec_!!{token}!!"}, "signingKey"),
    "bad-previous": ({"signingKey": "{good}", "previous": "previous-{token}"}, "previous"),
}


async def test_unusable_signing_key_is_reported_without_its_value(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    values: dict[str, list[str]] = {}
    for name, (template, _) in BAD_SIGNING_SECRETS.items():
        data = {
            k: v.format(
                token=secrets.token_hex(16),
                short=base64.b64encode(secrets.token_bytes(8)).decode(),
                good=signing_key(),
            )
            for k, v in template.items()
        }
        values[name] = list(data.values())
        await emu.create(secret(name, data))
        await emu.create(webhook(name, f"{receiver.url}/{name}", signingSecretRef={"name": name}))
    await emu.create(webhook("witness", f"{receiver.url}/witness"))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "DEPLOYED")
    for name in BAD_SIGNING_SECRETS:
        await wait_for(
            lambda name=name: reason_is(emu, name, "InvalidSigningKey"), timeout=10, what=f"{name}: Ready"
        )
        await wait_for(
            lambda name=name: any(
                d.get("outcome") == "Pending" and not d.get("attempts") for d in deliveries(emu, name)
            ),
            timeout=10,
            what=f"{name}: the delivery held, with no attempt, on the status",
        )
    await wait_for(lambda: len(receiver.on("/witness")) == 2, timeout=10, what="the witness's deliveries")
    for name, leaked in values.items():
        ready = condition(emu, "Webhook", NS, name)
        assert ready["status"] == "False"
        assert ready["message"].startswith("signingSecretRef: ")
        assert "a signing key must" in ready["message"]
        # A message a person can act on names the Secret and the key to fix.
        _, bad_key = BAD_SIGNING_SECRETS[name]
        assert f"{NS}/{name}" in ready["message"], ready["message"]
        assert repr(bad_key) in ready["message"], ready["message"]
        assert receiver.on(f"/{name}") == []
        dumped = json.dumps(emu.get("Webhook", NS, name))
        for value in leaked:
            assert value not in dumped, name
            assert value.removeprefix("whsec_") not in dumped, name


# ---------------------------------------------------------------- secrets stay secret


def rendered(record: logging.LogRecord) -> str:
    """Everything a log handler could write for a record: message, arguments, extras, traceback."""
    text = logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)
    extras = {k: v for k, v in vars(record).items() if k not in ("msg", "args", "exc_info", "exc_text")}
    return f"{text} {record.msg!s} {record.args!r} {extras!r}"


def leaks(text: str, needles: dict[str, str]) -> list[str]:
    return [what for what, needle in needles.items() if needle in text]


async def test_secrets_appear_nowhere(
    emu: Emulator, receiver: Receiver, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kopf")
    qovery_secret = f"qs-{secrets.token_urlsafe(24)}"
    key, previous = signing_key(), signing_key()
    password = secrets.token_hex(12)
    slack_path = f"/services/T{secrets.token_hex(4)}/B{secrets.token_hex(4)}/{secrets.token_hex(12)}"
    slack_url = f"http://hook:{password}@127.0.0.1:{receiver.port}{slack_path}"
    dead_path = f"/services/T0/B0/{secrets.token_hex(12)}"
    dead_url = f"http://127.0.0.1:{refused_port()}{dead_path}"
    garbled_path = f"/services/T1/B1/{secrets.token_hex(12)}"
    garbled_url = f"http://127.0.0.1:notaport{garbled_path}"
    needles = {
        "secretRef value": qovery_secret,
        "signing key": key,
        "signing key bytes": key.removeprefix("whsec_"),
        "previous signing key": previous,
        "previous signing key bytes": previous.removeprefix("whsec_"),
        "slack url": slack_url,
        "slack url path": slack_path,
        "slack url token": slack_path.rsplit("/", 1)[1],
        "slack url password": password,
        "dead url path": dead_path,
        "garbled url path": garbled_path,
    }
    receiver.scripts["/std"] = [503, 200]
    receiver.scripts[slack_path] = [503, 200]
    # Slow enough retries that the missing Secret can be supplied before attempts run out.
    settings = dataclasses.replace(FAST, retry_schedule=(0.5, 1.0, 1.0))
    async with running_operator(emu, settings, metrics=metrics):
        await emu.create(secret("std-secret", {"secret": qovery_secret}))
        await emu.create(
            webhook(
                "std",
                f"{receiver.url}/std",
                secretRef={"name": "std-secret"},
                signingSecretRef={"name": "std-keys"},  # missing until later
            )
        )
        for name, url in (("slack", slack_url), ("dead", dead_url), ("garbled", garbled_url)):
            await emu.create(secret(f"{name}-url", {"url": url}))
            await emu.create(webhook(name, "", kind="SLACK", urlSecretRef={"name": f"{name}-url"}))
        await wait_for(lambda: reason_is(emu, "std", "SecretNotFound"), timeout=10, what="std: missing")
        await emu.create(environment("web"))
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(
            lambda: any(d.get("outcome") == "Pending" for d in deliveries(emu, "std")),
            timeout=10,
            what="std: a delivery held without the Secret",
        )
        await emu.create(secret("std-keys", {"signingKey": key, "previous": previous}))
        await wait_for(lambda: len(receiver.on("/std")) == 2, timeout=10, what="std: 503 then 200")
        await deploy(emu, "web", "d-1", "DEPLOYMENT_ERROR")
        await wait_for(lambda: len(receiver.on("/std")) == 3, timeout=10, what="std: the failure event")
        await wait_for(lambda: len(receiver.on(slack_path)) == 3, timeout=10, what="slack: three requests")

        def settled() -> bool:
            counters = {
                n: status_of(emu, "Webhook", NS, n).get("counters", {})
                for n in ("std", "slack", "dead", "garbled")
            }
            return bool(
                counters["std"].get("delivered") == 2
                and counters["slack"].get("delivered") == 2
                and counters["dead"].get("failed") == 2
                and counters["garbled"].get("failed") == 2
            )

        await wait_for(settled, timeout=15, what="every delivery finished on the status")

    # The values were really in use: the scan below looks for strings the operator held.
    assert receiver.on("/std")[-1].headers["Qovery-Secret"] == qovery_secret
    assert receiver.on(slack_path)[-1].headers["Authorization"].startswith("Basic ")
    assert leaks(f"x{slack_path}x", needles) == ["slack url path", "slack url token"]

    records = list(caplog.records)
    assert any(r.levelno == logging.DEBUG and r.name.startswith("kopf") for r in records)
    assert any(r.levelno >= logging.WARNING and r.name.startswith("herald") for r in records)
    for record in records:
        assert leaks(rendered(record), needles) == [], rendered(record)
    objects = [
        (f"{resource.plural}/{name}", dict(obj.raw))
        for (resource, _ns, name), obj in list(emu.kmock.objects.items())
        if resource.plural != "secrets"
    ]
    events = [raw for _, raw in objects if "involvedObject" in raw]
    assert {e["reason"] for e in events} >= {"DeliveryFailed", "Recovered", "RetriesExhausted"}
    for what, raw in objects:
        assert leaks(json.dumps(raw), needles) == [], what
    for request in list(emu.kmock._requests):
        if "/secrets" not in str(request.url):
            assert leaks(f"{request.url} {json.dumps(request.data)}", needles) == [], str(request.url)
    exposition = generate_latest(metrics.registry).decode()
    assert "herald_delivery_attempts_total" in exposition
    assert leaks(exposition, needles) == []


# ---------------------------------------------------------------- Secrets opt in


async def test_a_secret_is_used_only_once_it_opts_in(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    """Whoever may create a Webhook must not be able to have any Secret of the namespace sent out."""
    plain = secret("db-password", {"secret": "hunter2"})
    del plain["metadata"]["labels"]
    await emu.create(plain)
    await emu.create(
        webhook("exfil", f"{receiver.url}/exfil", events=STARTED, secretRef={"name": "db-password"})
    )
    await wait_for(lambda: reason_is(emu, "exfil", "SecretNotAllowed"), timeout=10, what="SecretNotAllowed")
    message = condition(emu, "Webhook", NS, "exfil")["message"]
    assert f"Secret {NS}/db-password" in message
    assert "herald.dev/webhook-secret=true" in message
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(
        lambda: any(d.get("outcome") == "Pending" for d in deliveries(emu, "exfil")),
        timeout=10,
        what="the delivery held",
    )
    assert receiver.on("/exfil") == []
    assert "hunter2" not in json.dumps(emu.get("Webhook", NS, "exfil"))
    # The Secret's owner opts in: the held delivery goes, with the value.
    await emu.patch(
        "Secret", NS, "db-password", {"metadata": {"labels": {"herald.dev/webhook-secret": "true"}}}
    )
    await wait_for(lambda: len(receiver.on("/exfil")) == 1, timeout=10, what="the delivery once opted in")
    assert receiver.on("/exfil")[0].headers["Qovery-Secret"] == "hunter2"


# ---------------------------------------------------------------- Secrets of other namespaces


async def test_secrets_are_read_only_from_the_webhooks_own_namespace(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    refs = {
        "secretRef": {"name": "elsewhere", "key": "secret"},
        "signingSecretRef": {"name": "elsewhere", "key": "signingKey"},
        "caSecretRef": {"name": "elsewhere", "key": "ca.crt"},
        "urlSecretRef": {"name": "elsewhere", "key": "url"},
    }
    await emu.create(
        secret(
            "elsewhere",
            {"secret": "s", "signingKey": signing_key(), "ca.crt": "x", "url": f"{receiver.url}/stolen"},
            namespace=OTHER_NS,
        )
    )
    for field, ref in refs.items():
        url = "" if field == "urlSecretRef" else f"{receiver.url}/{field}"
        body = webhook(field.lower(), url)
        body["spec"][field] = {**ref, "namespace": OTHER_NS}
        await emu.create(body)
    await emu.create(secret("own", {"secret": "mine"}))
    await emu.create(webhook("own", f"{receiver.url}/own", secretRef={"name": "own", "namespace": NS}))
    await emu.create(
        webhook(
            "cluster", f"{receiver.url}/cluster", cluster=True, secretRef={"name": "own", "key": "secret"}
        )
    )
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "DEPLOYED")
    await wait_for(lambda: len(receiver.on("/own")) == 2, timeout=10, what="the own-namespace webhook")
    for field in refs:
        await wait_for(
            lambda field=field: reason_is(emu, field.lower(), "InvalidSpec"), timeout=10, what=field
        )
        ready = condition(emu, "Webhook", NS, field.lower())
        assert ready["status"] == "False"
        assert ready["message"] == (
            f"spec.{field}.namespace: a Webhook may only reference Secrets in its own namespace"
        )
    await wait_for(
        lambda: reason_is(emu, "cluster", "InvalidSpec", namespace=None, kind="ClusterWebhook"),
        timeout=10,
        what="the ClusterWebhook without a Secret namespace",
    )
    assert condition(emu, "ClusterWebhook", None, "cluster")["message"] == (
        "spec.secretRef.namespace: a ClusterWebhook must name the Secret's namespace"
    )
    assert receiver.on("/own")[0].headers["Qovery-Secret"] == "mine"
    assert {r.path for r in receiver.received} == {"/own"}


# ---------------------------------------------------------------- egress


async def test_denied_address_pauses_until_the_spec_changes(
    emu: Emulator, receiver: Receiver, allowed: HostedReceiver, metrics: Metrics
) -> None:
    async with running_operator(emu, ONLY_ALLOWED, metrics=metrics) as runtime:
        await emu.create(webhook("denied", f"{receiver.url}/denied"))
        await emu.create(webhook("witness", f"{allowed.url}/witness", events=STARTED))
        # Two retries of 0.2 s and 0.4 s: when the witness succeeds, a retry of the denied
        # delivery (due 0.2 s after its first attempt) would have happened long before.
        allowed.scripts["/witness"] = [503, 503, 200]
        await emu.create(environment("web"))
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(lambda: reason_is(emu, "denied", "EgressDenied"), timeout=10, what="Ready=False")
        await wait_for(lambda: len(allowed.on("/witness")) == 3, timeout=10, what="the witness's retries")

        live = runtime.dispatcher.pending_of(cluster=False, ref=ObjectRef(namespace=NS, name="denied"))
        assert [p.record.attempts for p in live] == [1]
        assert attempts_counted(metrics, "EgressDenied") == 1
        ready = condition(emu, "Webhook", NS, "denied")
        assert ready["status"] == "False"
        assert "EgressDenied: 127.0.0.1 is a loopback address" in ready["message"]
        (record,) = deliveries(emu, "denied")
        assert record["error"] == "EgressDenied: 127.0.0.1 is a loopback address"
        assert record["attempts"] == 1
        assert receiver.received == []

        await deploy(emu, "web", "d-1", "DEPLOYED")  # queued behind the pause, not attempted
        await wait_for(
            lambda: len(pending(emu, "denied")) == 2,
            timeout=10,
            what="the second delivery waiting",
        )
        assert attempts_counted(metrics, "EgressDenied") == 1

        await emu.patch(
            "Webhook", NS, "denied", {"metadata": {"generation": 2}, "spec": {"url": f"{allowed.url}/now"}}
        )
        await wait_for(lambda: len(allowed.on("/now")) == 2, timeout=10, what="both waiting deliveries")
        await wait_for(lambda: reason_is(emu, "denied", "Delivered"), timeout=10, what="Ready again")
    assert [r.json()["event_type"] for r in allowed.on("/now")] == [
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_SUCCESSFUL",
    ]
    started = next(d for d in deliveries(emu, "denied") if d["event"] == "DEPLOYMENT_STARTED")
    assert [a.get("error") or a.get("httpStatus") for a in started["attemptLog"]] == [
        "EgressDenied: 127.0.0.1 is a loopback address",
        200,
    ]
    assert receiver.received == []


async def test_pause_survives_a_restart_and_lifts_when_the_policy_changes(
    emu: Emulator, receiver: Receiver, allowed: HostedReceiver
) -> None:
    await emu.create(webhook("denied", f"{receiver.url}/denied", events=STARTED))
    await emu.create(webhook("witness", f"{allowed.url}/witness", events=STARTED))
    await emu.create(environment("web"))
    await emu.create(environment("barrier"))
    async with running_operator(emu, ONLY_ALLOWED):
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(
            lambda: (
                (status_of(emu, "Webhook", NS, "denied").get("pause") or {}).get("reason") == "EgressDenied"
            ),
            timeout=10,
            what="the pause on the status",
        )
    async with running_operator(emu, ONLY_ALLOWED):  # the same policy: still paused
        await deploy(emu, "barrier", "b-1", "QUEUED")
        await wait_for(lambda: len(allowed.on("/witness")) == 2, timeout=10, what="the barrier")
        await wait_for(
            lambda: len(pending(emu, "denied")) == 2,
            timeout=10,
            what="both deliveries waiting",
        )
        assert [d["attempts"] for d in deliveries(emu, "denied")] == [0, 1]
    async with running_operator(emu, FAST):  # 127.0.0.0/8 allowed now: the pause lifts
        await wait_for(lambda: len(receiver.on("/denied")) == 2, timeout=10, what="the deliveries")
        await wait_for(lambda: reason_is(emu, "denied", "Delivered"), timeout=10, what="Ready")
    assert generation_of(emu, "denied") == 1


async def test_hostnames_are_judged_on_the_address_connected_to(
    emu: Emulator, allowed: HostedReceiver
) -> None:
    resolver = ScriptedResolver(
        {
            "loopback.test": [["127.0.0.1"]],
            "mixed.test": [["127.0.0.1", ALLOWED_HOST]],
            # DNS rebinding: an allowed answer first, loopback on the next resolution.
            "rebind.test": [[ALLOWED_HOST], ["127.0.0.1"]],
        }
    )
    # The first answer closes its connection, so the next delivery resolves the name again.
    allowed.scripts["/rebind"] = [(200, {"Connection": "close"})]
    async with running_operator(emu, ONLY_ALLOWED, resolver=resolver):
        for host in ("loopback", "mixed", "rebind"):
            await emu.create(webhook(host, f"http://{host}.test:{allowed.port}/{host}", events=STARTED))
        await emu.create(environment("web"))
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(lambda: reason_is(emu, "loopback", "EgressDenied"), timeout=10, what="loopback.test")
        await wait_for(lambda: len(allowed.on("/mixed")) == 1, timeout=10, what="mixed.test")
        await wait_for(lambda: len(allowed.on("/rebind")) == 1, timeout=10, what="rebind.test, first")
        await deploy(emu, "web", "d-2", "QUEUED")
        await wait_for(lambda: len(allowed.on("/mixed")) == 2, timeout=10, what="mixed.test, again")
        await wait_for(lambda: reason_is(emu, "rebind", "EgressDenied"), timeout=10, what="the rebinding")
    first = next(d for d in deliveries(emu, "loopback") if d["deploymentId"] == "d-1")
    assert first["error"] == "EgressDenied: 127.0.0.1 is a loopback address"
    assert allowed.on("/loopback") == []
    assert allowed.on("/mixed")[0].headers["Host"] == f"mixed.test:{allowed.port}"
    assert len(allowed.on("/rebind")) == 1
    latest = deliveries(emu, "rebind")[0]
    assert latest["error"] == "EgressDenied: 127.0.0.1 is a loopback address"
    assert resolver.asked.count("rebind.test") == 2


async def test_require_https_refuses_http(
    emu: Emulator, receiver: Receiver, https_receiver: HostedReceiver, ca: trustme.CA
) -> None:
    settings = dataclasses.replace(FAST, require_https=True)
    await emu.create(secret("private-ca", {"ca.crt": ca.cert_pem.bytes().decode()}))
    await emu.create(webhook("plain", f"{receiver.url}/plain", events=STARTED))
    await emu.create(
        webhook("tls", f"{https_receiver.url}/tls", events=STARTED, caSecretRef={"name": "private-ca"})
    )
    await emu.create(environment("web"))
    async with running_operator(emu, settings):
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(lambda: len(https_receiver.on("/tls")) == 1, timeout=10, what="the https delivery")
        await wait_for(lambda: reason_is(emu, "plain", "EgressDenied"), timeout=10, what="http refused")
    message = condition(emu, "Webhook", NS, "plain")["message"]
    assert "https is required (HERALD_REQUIRE_HTTPS=true), the URL uses http" in message
    assert deliveries(emu, "plain")[0]["attempts"] == 1
    assert receiver.received == []


# ---------------------------------------------------------------- TLS


async def test_private_ca_from_a_secret(
    emu: Emulator, https_receiver: HostedReceiver, ca: trustme.CA
) -> None:
    # Slow enough retries that the CA can be added while the delivery still has attempts left.
    settings = dataclasses.replace(FAST, retry_schedule=(0.3, 0.6, 1.2, 2.4, 4.8))
    async with running_operator(emu, settings):
        await emu.create(webhook("tls", f"{https_receiver.url}/tls", events=STARTED))
        await emu.create(environment("web"))
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(
            lambda: bool(deliveries(emu, "tls")) and deliveries(emu, "tls")[0]["attempts"] >= 1,
            timeout=10,
            what="a refused handshake on the status",
        )
        record = deliveries(emu, "tls")[0]
        assert record["error"].startswith("TLSError: certificate verify failed"), record
        assert record["outcome"] == "Retrying"
        await wait_for(
            lambda: bool(condition(emu, "Webhook", NS, "tls", "Degraded")), timeout=10, what="Degraded"
        )
        degraded = condition(emu, "Webhook", NS, "tls", "Degraded")
        assert degraded["status"] == "True"
        assert "TLSError" in degraded["message"]
        assert https_receiver.received == []

        await emu.create(secret("private-ca", {"ca.crt": ca.cert_pem.bytes().decode()}))
        await emu.patch(
            "Webhook",
            NS,
            "tls",
            {"metadata": {"generation": 2}, "spec": {"caSecretRef": {"name": "private-ca"}}},
        )
        await wait_for(lambda: len(https_receiver.on("/tls")) == 1, timeout=15, what="the delivery")
        await wait_for(
            lambda: deliveries(emu, "tls")[0]["outcome"] == "Succeeded", timeout=10, what="recorded"
        )
    log = deliveries(emu, "tls")[0]["attemptLog"]
    assert all(a["error"].startswith("TLSError") for a in log[:-1])
    assert log[-1]["httpStatus"] == 200
    assert len(log) >= 2


# ---------------------------------------------------------------- garbage in


SEED = 20240604
WEBHOOK_SPEC_GARBAGE: dict[str, list[Any]] = {  # per field, values Herald's rules reject
    "url": [5, "ftp://example.test/", "http://", "", ["http://a.test/"], "http://a.test/" + "x" * 3000],
    "kind": ["TEAMS", 5, None, ["STANDARD"]],
    "events": [[], [1, 2], "DEPLOYMENT_STARTED", ["DEPLOYMENT_STARTED"] * 2, ["WEBHOOK_TEST"], None],
    "secretRef": ["x", {"name": 5}, {"name": ""}, {"name": "UPPER"}, [1], {"name": "s", "namespace": "x"}],
    "enabled": ["maybe", [], {}],
    "environmentTypesFilter": [["PROD"], "PRODUCTION", [1]],
    "projectNamesFilter": [[None], [""], "shop", [5]],
    "signingSecretRef": [{"key": "k"}, 7],
    "caSecretRef": [[], "ca"],
    "namespaceSelector": [{"matchLabels": {"a": "b"}}, {"matchLabels": 5}],
    "urlSecretRef": [{"name": "both"}],  # alongside url: exactly one of the two
    "description": [{"a": 1}, "d" * 5000],
}
WHOLE_GARBAGE: list[Any] = [5, "x", [1, 2], None, True, {}]
# Garbage inside the status object. A scalar status ("x", 5) is left out: kmock answers 500 to a
# merge patch onto a scalar, where a real API server (RFC 7386) replaces it with the patch.
STATUS_GARBAGE: list[Any] = [
    {"conditions": "x"},
    {"conditions": [1, {"type": 5}]},
    {"deliveries": [1, {"payloadId": 5}]},
    {"pending": [{"record": 1}], "sent": "x"},
    {"counters": {"delivered": "many"}},
    {"pause": {"reason": "Whatever"}},
    {"observedGeneration": "one", "lastDelivery": [1]},
]
ENVIRONMENT_GARBAGE: list[dict[str, Any]] = [
    {"spec": 5},
    {"spec": "x"},
    {"spec": [1, 2]},
    {"spec": {"type": "MARS"}},
    {"spec": {"organization": 5, "project": {"name": 5}, "type": "PRODUCTION"}},
    {
        "spec": {
            "organization": {"name": "o"},
            "project": {"name": "fuzz"},
            "type": "PREVIEW",
            "applications": [1, "x", None],
        }
    },
    {"status": "x"},
    {"status": [1, 2]},
    {"status": {"deployment": [1, 2]}},
    {"status": {"deployment": {"id": 5, "currentStatus": "DEPLOYED"}}},
    {"status": {"deployment": {"id": "", "currentStatus": "DEPLOYED"}}},
    {"status": {"deployment": {"id": "z", "currentStatus": "EXPLODED"}}},
    {"status": {"deployment": {"id": "z", "currentStatus": "DEPLOYED", "logs": "x"}}},
    {"status": {"deployment": {"id": "z", "currentStatus": "DEPLOYED", "logs": [1, None]}}},
    {
        "status": {"deployment": {"id": "z", "currentStatus": "QUEUED"}},
        "metadata": {"annotations": {"herald.dev/notified": "{not json"}},
    },
    {
        "status": {"deployment": {"id": "z", "currentStatus": "QUEUED"}},
        "metadata": {"annotations": {"herald.dev/notified": '{"deployments": 5}'}},
    },
]


def garbage_webhooks(rng: random.Random, receiver: Receiver, count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        body = webhook(f"garbage-{n}", f"{receiver.url}/garbage-{n}")
        if rng.random() < 0.25:
            body["spec"] = rng.choice(WHOLE_GARBAGE)
        else:
            for field in rng.sample(sorted(WEBHOOK_SPEC_GARBAGE), k=rng.randint(1, 3)):
                body["spec"][field] = rng.choice(WEBHOOK_SPEC_GARBAGE[field])
        if rng.random() < 0.5:
            body["status"] = rng.choice(STATUS_GARBAGE)
        yield body


def garbage_environments(rng: random.Random, count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        body = environment(f"garbage-{n}", project="fuzz")
        for part in rng.sample(ENVIRONMENT_GARBAGE, k=rng.randint(1, 2)):
            for key, value in part.items():
                if key == "metadata":
                    body["metadata"] = {**body["metadata"], **value}
                else:
                    body[key] = value
        yield body


async def test_garbage_objects_never_stop_the_good_ones(
    emu: Emulator, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    bad_webhooks = list(garbage_webhooks(rng, receiver, 20))
    bad_environments = list(garbage_environments(rng, 20))
    async with running_operator(emu, FAST):
        await emu.create(webhook("good", f"{receiver.url}/good", projectNamesFilter=["good-project"]))
        await emu.create(environment("good", project="good-project"))
        await deploy(emu, "good", "d-1", "QUEUED")
        for bad_webhook, bad_environment in zip(bad_webhooks, bad_environments, strict=True):
            await emu.create(bad_webhook)
            await emu.create(bad_environment)
        await deploy(emu, "good", "d-1", "DEPLOYED")
        await wait_for(lambda: len(receiver.on("/good")) == 2, timeout=10, what="the good deliveries")
        for body in bad_webhooks:
            name = body["metadata"]["name"]
            await wait_for(
                lambda name=name: ready_of(emu, name).get("status") == "False",
                timeout=10,
                what=f"Ready=False on {name}: {body['spec']!r}",
            )
            ready = ready_of(emu, name)
            assert ready["reason"] == "InvalidSpec", (body["spec"], ready)
            assert ready["message"].startswith("spec"), ready
        await deploy(emu, "good", "d-2", "QUEUED")  # still running after all of it
        await wait_for(lambda: len(receiver.on("/good")) == 3, timeout=10, what="a delivery afterwards")
    assert [r.json()["event_type"] for r in receiver.on("/good")] == [
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_SUCCESSFUL",
        "DEPLOYMENT_STARTED",
    ]
    assert not any(r.path.startswith("/garbage") for r in receiver.received)
    assert any("skipped" in r.getMessage() for r in caplog.records)  # the garbage was seen
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert failures == [], [r.getMessage() for r in failures]
