"""A webhook's credentials: its URL, shared secret, signing keys and CA, read from Secrets.

Herald reads only the Secrets that opt in with ``herald.dev/webhook-secret: "true"`` (whoever may
create a webhook must not be able to have any Secret of a namespace sent to a URL of their
choice), on demand, and keeps them ``ttl`` seconds: a rotated Secret is used without a restart,
and the hot path makes no API call for a webhook delivered to recently. What cannot be used is a
``SecretProblem`` whose reason goes on the webhook's Ready condition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from herald.kube import ApiError, Secret
from herald.models import PREVIOUS_SIGNING_KEY, SecretRef, WebhookSpec
from herald.signing import signing_key_error

__all__ = ["SECRET_LABEL", "SecretCache", "SecretProblem", "SecretSource", "Target"]

# Herald reads only the Secrets that opt in with this label set to "true": whoever may create a
# webhook must not be able to have any Secret of a namespace sent to a URL of their choice.
SECRET_LABEL = "herald.dev/webhook-secret"


class SecretSource(Protocol):
    async def read_secret(self, namespace: str, name: str) -> Secret | None: ...


class SecretProblem(Exception):
    """A referenced Secret or key is missing or unusable; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and how a delivery goes, with the secret values read for it."""

    url: str
    secret: str | None
    signing_keys: tuple[str, ...]
    ca_pem: str | None

    def secrets(self) -> tuple[str, ...]:
        values = (self.secret, *self.signing_keys, self.url)
        return tuple(v for v in values if v)


class SecretCache:
    """Secrets read on demand and kept ``ttl`` seconds: rotation needs no restart, and the hot path
    makes no API call for a webhook delivered to recently."""

    def __init__(self, source: SecretSource, *, ttl: float, clock: Callable[[], float]) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        # A Secret that does not opt in is kept without its data; a failed read is not kept.
        self._entries: dict[tuple[str, str], tuple[float, Secret | None]] = {}

    async def _read(self, namespace: str, name: str, field: str) -> Secret | None:
        try:
            secret = await self._source.read_secret(namespace, name)
        except ApiError as exc:  # the client already retried what was transient
            raise SecretProblem(
                "SecretUnreadable", f"{field}: cannot read Secret {namespace}/{name}: {exc}"
            ) from exc
        if secret is not None and secret.labels.get(SECRET_LABEL) != "true":
            secret = Secret(data={}, labels=secret.labels)
        return secret

    async def value(self, ref: SecretRef, *, namespace: str, field: str) -> str:
        key = (namespace, ref.name)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is None or now - cached[0] > self._ttl:
            cached = (now, await self._read(namespace, ref.name, field))
            self._entries[key] = cached
            if len(self._entries) > 4096:  # bounded: drop the oldest half
                for old in sorted(self._entries, key=lambda k: self._entries[k][0])[:2048]:
                    del self._entries[old]
        secret = cached[1]
        if secret is None:
            raise SecretProblem("SecretNotFound", f"{field}: Secret {namespace}/{ref.name} not found")
        if secret.labels.get(SECRET_LABEL) != "true":
            raise SecretProblem(
                "SecretNotAllowed",
                f"{field}: Secret {namespace}/{ref.name} is not labelled {SECRET_LABEL}=true; Herald "
                f"reads only Secrets that opt in: kubectl label secret -n {namespace} {ref.name} "
                f"{SECRET_LABEL}=true",
            )
        data = secret.data
        if ref.key not in data:
            raise SecretProblem(
                "SecretKeyNotFound", f"{field}: Secret {namespace}/{ref.name} has no key {ref.key!r}"
            )
        # `echo value | kubectl create secret` leaves a newline no header or key may carry.
        return data[ref.key].strip()

    async def optional(self, ref: SecretRef, *, namespace: str, key: str) -> str | None:
        try:
            return await self.value(ref.model_copy(update={"key": key}), namespace=namespace, field="")
        except SecretProblem:
            return None

    async def target(self, spec: WebhookSpec, *, namespace: str | None, cluster: bool) -> Target:
        """What ``spec`` resolves to; SecretProblem when a Secret it names cannot be used.
        A Webhook reads Secrets of its own ``namespace``; a ClusterWebhook names each one's."""
        cache = self

        def where(ref: SecretRef) -> str:
            return ref.namespace if cluster and ref.namespace else (namespace or "")

        url = spec.url
        if spec.url_secret_ref is not None:
            url = await cache.value(
                spec.url_secret_ref, namespace=where(spec.url_secret_ref), field="urlSecretRef"
            )
        secret = None
        if spec.secret_ref is not None:
            secret = await cache.value(spec.secret_ref, namespace=where(spec.secret_ref), field="secretRef")
        keys: tuple[str, ...] = ()
        if spec.signing_secret_ref is not None:
            ref = spec.signing_secret_ref
            current = await cache.value(ref, namespace=where(ref), field="signingSecretRef")
            previous = await cache.optional(ref, namespace=where(ref), key=PREVIOUS_SIGNING_KEY)
            keys = tuple(k for k in (current, previous) if k)
            for key_name, value in ((ref.key, current), (PREVIOUS_SIGNING_KEY, previous)):
                error = signing_key_error(value) if value else None
                if error is not None:
                    where_ = f"Secret {where(ref)}/{ref.name} key {key_name!r}"
                    raise SecretProblem("InvalidSigningKey", f"signingSecretRef: {where_}: {error}")
        ca = None
        if spec.ca_secret_ref is not None:
            ca = await cache.value(
                spec.ca_secret_ref, namespace=where(spec.ca_secret_ref), field="caSecretRef"
            )
        if url is None:  # excluded by the spec's validation; kept for the type checker
            raise SecretProblem("InvalidSpec", "no url")
        return Target(url=url, secret=secret, signing_keys=keys, ca_pem=ca)
