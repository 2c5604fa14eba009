"""Pydantic models of Herald's resources, and the validation rules they share with the CRDs.

The CRDs in ``crds/`` reject bad objects at admission; the operator applies the same rules
here so an object that got in anyway (an older CRD, a schema-less cluster) is reported with
the same message on ``Ready=False``. The messages are the constants below: the CRDs' CEL
``message`` fields repeat them verbatim, and a test keeps the two in step.

Models parse Kubernetes' camelCase (``by_alias``) and are frozen: they are values.
"""

from __future__ import annotations

import datetime
import enum
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "CONTENT_TYPE_PATTERN",
    "DEFAULT_CA_KEY",
    "DEFAULT_DISABLE_AFTER",
    "DEFAULT_SECRET_KEY",
    "DEFAULT_SIGNING_KEY",
    "DEFAULT_URL_KEY",
    "DEPLOYMENT_EVENTS",
    "DNS_SUBDOMAIN_PATTERN",
    "DURATION_PATTERN",
    "HEADER_VALUE_PATTERN",
    "MAX_CONTENT_TYPE_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_FILTER_ITEMS",
    "MAX_HEADER_VALUE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_RATE_BURST",
    "MAX_RATE_PER_SECOND",
    "MAX_TEMPLATE_HEADERS",
    "MAX_TEMPLATE_LENGTH",
    "MAX_URL_LENGTH",
    "MIN_RATE_PER_SECOND",
    "MSG_CLOUDEVENTS_KIND",
    "MSG_EVENTS_EMPTY",
    "MSG_EVENTS_UNIQUE",
    "MSG_HEADER_NAME",
    "MSG_HEADER_RESERVED",
    "MSG_ONE_SOURCE",
    "MSG_TEMPLATE_KIND",
    "MSG_URL_OR_SECRET",
    "MSG_URL_SCHEME",
    "PREVIOUS_SIGNING_KEY",
    "RESERVED_HEADERS",
    "URL_PATTERN",
    "ArgoCDRef",
    "Attempt",
    "CloudEventsMode",
    "CloudEventsOptions",
    "Condition",
    "DeliveryOutcome",
    "DeliveryRecord",
    "DeploymentEvent",
    "DeploymentState",
    "DeploymentStatus",
    "DeploymentsSource",
    "EnvironmentRef",
    "EnvironmentSource",
    "EnvironmentSpec",
    "EnvironmentType",
    "EventType",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Named",
    "NotifiedLedger",
    "ObjectRef",
    "PendingDelivery",
    "RateLimit",
    "SecretRef",
    "Service",
    "SourceRef",
    "SpecError",
    "Template",
    "WebhookKind",
    "WebhookSpec",
    "first_error",
    "parse_duration",
]

# One source of truth for validation messages (the CRDs' CEL rules repeat them verbatim).
MSG_URL_OR_SECRET = "exactly one of url and urlSecretRef must be set"
MSG_URL_SCHEME = "url must start with http:// or https://"
MSG_EVENTS_EMPTY = "events must list at least one event"
MSG_EVENTS_UNIQUE = "events must not repeat an event"
MSG_ONE_SOURCE = (
    "source must set at most one of deployments, argoCDApplication, fluxKustomization, fluxHelmRelease"
)
MSG_TEMPLATE_KIND = "template must be set when kind is CUSTOM, and only then"
MSG_CLOUDEVENTS_KIND = "cloudEvents may be set only when kind is CLOUDEVENTS"
MSG_HEADER_NAME = "header names are letters, digits and hyphens, at most 64"
MSG_HEADER_RESERVED = (
    "headers may not set Content-Type, Host, User-Agent or a header Herald signs or sends itself"
)

URL_PATTERN = r"^https?://[^\x00-\x20\x7f/?#]+([/?#][^\x00-\x20\x7f]*)?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 1024
MAX_FILTER_ITEMS = 64
MAX_NAME_LENGTH = 253
MAX_TEMPLATE_LENGTH = 32 * 1024
MAX_TEMPLATE_HEADERS = 16
MAX_HEADER_VALUE_LENGTH = 1024
MAX_CONTENT_TYPE_LENGTH = 128
HEADER_NAME_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
HEADER_VALUE_PATTERN = r"^[ -~]*$"  # visible ASCII and space (RFC 9110 field values)
CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+( *; *[A-Za-z0-9.+-]+=[A-Za-z0-9.+-]+)*$"
# Headers a template may not set: Herald's own (length, framing, identity) and the ones it
# authenticates deliveries with, so a template can neither break HTTP nor forge a signature.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "host",
        "user-agent",
        "accept-encoding",
        "qovery-secret",
        "qovery-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
# Go's duration syntax restricted to hours, minutes and seconds, as `kubectl` users write it.
DURATION_PATTERN = r"^([0-9]{1,6}(h|m|s))+$"
DEFAULT_DISABLE_AFTER = "120h"
MIN_RATE_PER_SECOND = 0.001  # one delivery in about 17 minutes
MAX_RATE_PER_SECOND = 100.0
MAX_RATE_BURST = 100


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class WebhookKind(enum.StrEnum):
    STANDARD = "STANDARD"
    SLACK = "SLACK"
    CUSTOM = "CUSTOM"
    CLOUDEVENTS = "CLOUDEVENTS"
    TEAMS = "TEAMS"


class EventType(enum.StrEnum):
    DEPLOYMENT_STARTED = "DEPLOYMENT_STARTED"
    DEPLOYMENT_SUCCESSFUL = "DEPLOYMENT_SUCCESSFUL"
    DEPLOYMENT_CANCELLED = "DEPLOYMENT_CANCELLED"
    DEPLOYMENT_FAILURE = "DEPLOYMENT_FAILURE"
    # Sent only by a ping (herald.dev/ping); never derived from a deployment.
    WEBHOOK_TEST = "WEBHOOK_TEST"


DEPLOYMENT_EVENTS: tuple[EventType, ...] = (
    EventType.DEPLOYMENT_STARTED,
    EventType.DEPLOYMENT_SUCCESSFUL,
    EventType.DEPLOYMENT_CANCELLED,
    EventType.DEPLOYMENT_FAILURE,
)


class EnvironmentType(enum.StrEnum):
    PRODUCTION = "PRODUCTION"
    DEVELOPMENT = "DEVELOPMENT"
    STAGING = "STAGING"
    PREVIEW = "PREVIEW"


class DeploymentState(enum.StrEnum):
    """Qovery's ``StateEnum``."""

    BUILDING = "BUILDING"
    BUILD_ERROR = "BUILD_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    DELETED = "DELETED"
    DELETE_ERROR = "DELETE_ERROR"
    DELETE_QUEUED = "DELETE_QUEUED"
    DELETING = "DELETING"
    DEPLOYED = "DEPLOYED"
    DEPLOYING = "DEPLOYING"
    DEPLOYMENT_ERROR = "DEPLOYMENT_ERROR"
    DEPLOYMENT_QUEUED = "DEPLOYMENT_QUEUED"
    EXECUTING = "EXECUTING"
    QUEUED = "QUEUED"
    READY = "READY"
    RECAP = "RECAP"
    RESTARTED = "RESTARTED"
    RESTARTING = "RESTARTING"
    RESTART_ERROR = "RESTART_ERROR"
    RESTART_QUEUED = "RESTART_QUEUED"
    STOPPED = "STOPPED"
    STOPPING = "STOPPING"
    STOP_ERROR = "STOP_ERROR"
    STOP_QUEUED = "STOP_QUEUED"
    UNAVAILABLE = "UNAVAILABLE"
    WAITING_DELETING = "WAITING_DELETING"
    WAITING_RESTARTING = "WAITING_RESTARTING"
    WAITING_RUNNING = "WAITING_RUNNING"
    WAITING_STOPPING = "WAITING_STOPPING"


# ---------------------------------------------------------------- Webhook / ClusterWebhook


class SecretRef(_Model):
    """A key of a Secret. ``namespace`` is honoured only on a ClusterWebhook."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN)]
    key: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    namespace: Annotated[str | None, Field(max_length=63)] = None


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


# Default keys inside the referenced Secrets (documented in the CRDs).
DEFAULT_SECRET_KEY = "secret"
DEFAULT_URL_KEY = "url"
DEFAULT_SIGNING_KEY = "signingKey"
DEFAULT_CA_KEY = "ca.crt"
# A second signing key, sent alongside during rotation.
PREVIOUS_SIGNING_KEY = "previous"
DEFAULT_KEYS = {
    "secret_ref": DEFAULT_SECRET_KEY,
    "url_secret_ref": DEFAULT_URL_KEY,
    "signing_secret_ref": DEFAULT_SIGNING_KEY,
    "ca_secret_ref": DEFAULT_CA_KEY,
}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``120h`` or ``1h30m`` (``DURATION_PATTERN``)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"expected a duration such as 120h, 30m or 1h30m, got {text[:32]!r}")
    units = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(h|m|s)", text)))


class Template(_Model):
    """A CUSTOM webhook's request: a Jinja2 body (rendered in a sandbox), its type, fixed headers."""

    body: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE_LENGTH)]
    content_type: Annotated[str, Field(max_length=MAX_CONTENT_TYPE_LENGTH, pattern=CONTENT_TYPE_PATTERN)] = (
        "application/json"
    )
    headers: Annotated[dict[str, str], Field(max_length=MAX_TEMPLATE_HEADERS)] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(HEADER_NAME_PATTERN, name):
                raise ValueError(MSG_HEADER_NAME)
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(MSG_HEADER_RESERVED)
            if len(text) > MAX_HEADER_VALUE_LENGTH or not re.fullmatch(HEADER_VALUE_PATTERN, text):
                raise ValueError(
                    f"header {name}: values are visible ASCII, at most {MAX_HEADER_VALUE_LENGTH}"
                )
        return value


class CloudEventsMode(enum.StrEnum):
    """CloudEvents HTTP content modes: the event as one JSON document, or attributes as headers."""

    STRUCTURED = "structured"
    BINARY = "binary"


class CloudEventsOptions(_Model):
    mode: CloudEventsMode = CloudEventsMode.STRUCTURED


class RateLimit(_Model):
    """A token bucket: ``per_second`` deliveries a second on average, at most ``burst`` at once."""

    per_second: Annotated[float, Field(ge=MIN_RATE_PER_SECOND, le=MAX_RATE_PER_SECOND)]
    burst: Annotated[int, Field(ge=1, le=MAX_RATE_BURST)] = 1


class WebhookSpec(_Model):
    """The spec shared by Webhook and ClusterWebhook (``namespace_selector`` is cluster-only)."""

    url: Annotated[str | None, Field(max_length=MAX_URL_LENGTH)] = None
    url_secret_ref: SecretRef | None = None
    kind: WebhookKind
    events: tuple[EventType, ...]
    secret_ref: SecretRef | None = None
    description: Annotated[str | None, Field(max_length=MAX_DESCRIPTION_LENGTH)] = None
    enabled: bool = True
    environment_types_filter: Annotated[tuple[EnvironmentType, ...], Field(max_length=4)] = ()
    project_names_filter: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)], ...],
        Field(max_length=MAX_FILTER_ITEMS),
    ] = ()
    signing_secret_ref: SecretRef | None = None
    ca_secret_ref: SecretRef | None = None
    namespace_selector: LabelSelector | None = None
    template: Template | None = None
    cloud_events: CloudEventsOptions | None = None
    rate_limit: RateLimit | None = None
    disable_after: Annotated[str, Field(max_length=32)] = DEFAULT_DISABLE_AFTER

    @field_validator("secret_ref", "url_secret_ref", "signing_secret_ref", "ca_secret_ref", mode="before")
    @classmethod
    def _default_key(cls, value: Any, info: ValidationInfo) -> Any:
        """A ref without ``key`` gets the documented default key of its field (as the CRD defaults it)."""
        if isinstance(value, dict) and "key" not in value and info.field_name is not None:
            return {**value, "key": DEFAULT_KEYS[info.field_name]}
        return value

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(URL_PATTERN, value):
            raise ValueError(MSG_URL_SCHEME)
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[EventType, ...]) -> tuple[EventType, ...]:
        if not value:
            raise ValueError(MSG_EVENTS_EMPTY)
        if len(set(value)) != len(value):
            raise ValueError(MSG_EVENTS_UNIQUE)
        if EventType.WEBHOOK_TEST in value:
            raise ValueError(f"events may not list {EventType.WEBHOOK_TEST.value}; use herald.dev/ping")
        return value

    @field_validator("disable_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _exclusive_fields(self) -> WebhookSpec:
        if (self.url is None) == (self.url_secret_ref is None):
            raise ValueError(MSG_URL_OR_SECRET)
        if (self.template is None) == (self.kind is WebhookKind.CUSTOM):
            raise ValueError(MSG_TEMPLATE_KIND)
        if self.cloud_events is not None and self.kind is not WebhookKind.CLOUDEVENTS:
            raise ValueError(MSG_CLOUDEVENTS_KIND)
        return self

    @property
    def disable_after_seconds(self) -> float | None:
        """How long every attempt may fail before the webhook is disabled; None: never (``0s``)."""
        return parse_duration(self.disable_after) or None


class SpecError(ValueError):
    """A spec that fails Herald's rules; ``str()`` is a message a person can act on."""


def first_error(exc: ValidationError) -> str:
    """Turn pydantic's report into one line naming the field, without echoing input values."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(to_camel(str(part)) if isinstance(part, str) else f"[{part}]" for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"spec.{loc}: {msg}" if loc else f"spec: {msg}"


# ---------------------------------------------------------------- Environment


class Named(_Model):
    id: str | None = None
    name: str


class Service(_Model):
    """A service of an environment; extra fields are kept and passed through to payloads."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow")

    id: str | None = None
    name: str


class DeploymentsSource(_Model):
    """apps/v1 Deployments of the Environment's own namespace, chosen by label."""

    selector: LabelSelector


class SourceRef(_Model):
    """One Argo CD Application or Flux object; ``namespace`` defaults to the Environment's."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN)]
    namespace: Annotated[str | None, Field(min_length=1, max_length=63)] = None


class ArgoCDRef(SourceRef):
    """An Argo CD Application: its namespace is Argo CD's, rarely the Environment's, so it is required."""

    namespace: Annotated[str, Field(min_length=1, max_length=63)]


class EnvironmentSource(_Model):
    """Where the Environment's deployments come from: with one, Herald writes ``status.deployment``."""

    deployments: DeploymentsSource | None = None
    argo_cd_application: Annotated[ArgoCDRef | None, Field(alias="argoCDApplication")] = None
    flux_kustomization: SourceRef | None = None
    flux_helm_release: SourceRef | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> EnvironmentSource:
        if sum(getattr(self, field) is not None for field in self.kinds()) > 1:
            raise ValueError(MSG_ONE_SOURCE)
        return self

    @staticmethod
    def kinds() -> tuple[str, ...]:
        return ("deployments", "argo_cd_application", "flux_kustomization", "flux_helm_release")

    def chosen(self) -> tuple[str, DeploymentsSource | SourceRef] | None:
        """The one source set, by its field name in Kubernetes' spelling; None when none is."""
        for field in self.kinds():
            value = getattr(self, field)
            if value is not None:
                return str(type(self).model_fields[field].alias), value
        return None


class EnvironmentSpec(_Model):
    organization: Named
    project: Named
    type: EnvironmentType
    cluster_name: str | None = None
    applications: tuple[Service, ...] = ()
    databases: tuple[Service, ...] = ()
    containers: tuple[Service, ...] = ()
    jobs: tuple[Service, ...] = ()
    source: EnvironmentSource | None = None


class DeploymentStatus(_Model):
    id: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    current_status: DeploymentState
    desired_status: DeploymentState | None = None
    logs: tuple[str, ...] = ()
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    triggered_by: str | None = None
    # What this deployment rolled out (a source names its Deployments and their images); payloads
    # list them among the environment's applications.
    applications: tuple[Service, ...] = ()


class EnvironmentRef(_Model):
    """What a payload says of the environment: the Kubernetes identity plus Qovery's fields."""

    uid: str
    name: str
    namespace: str
    type: EnvironmentType
    cluster_name: str | None = None


class DeploymentEvent(_Model):
    """One deployment event of one environment: everything a formatter needs, and nothing else.

    It is also what a pending delivery persists on the webhook's status, so a delivery resumed
    after a restart sends the body it would have sent before (its logs trimmed to their newest
    lines when long: see ``status.persisted``).
    """

    event_type: EventType
    payload_id: str
    created_at: datetime.datetime
    environment: EnvironmentRef
    organization: Named
    project: Named
    deployment: DeploymentStatus
    applications: tuple[Service, ...] = ()
    databases: tuple[Service, ...] = ()
    containers: tuple[Service, ...] = ()
    jobs: tuple[Service, ...] = ()


class NotifiedLedger(_Model):
    """Events already notified, per deployment id, newest deployment last.

    Persisted as the Environment's ``herald.dev/notified`` annotation, so a restart or a
    re-list never re-sends an event; bounded to the few latest deployment ids.
    """

    deployments: dict[str, tuple[EventType, ...]] = Field(default_factory=dict)


# ---------------------------------------------------------------- Status


class ObjectRef(_Model):
    """Which Webhook or ClusterWebhook (``namespace`` is None for a ClusterWebhook)."""

    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class DeliveryOutcome(enum.StrEnum):
    PENDING = "Pending"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Attempt(_Model):
    number: int
    time: datetime.datetime
    http_status: int | None = None
    error: str | None = None
    duration_ms: int


class DeliveryRecord(_Model):
    """One delivery as the webhook's status shows it."""

    payload_id: str
    event: EventType
    environment: str  # namespace/name
    deployment_id: str
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    time: datetime.datetime
    outcome: DeliveryOutcome = DeliveryOutcome.PENDING
    duration_ms: int | None = None
    next_attempt_at: datetime.datetime | None = None
    attempt_log: tuple[Attempt, ...] = ()


class PendingDelivery(_Model):
    """A delivery not yet finished, with what is needed to resume it after a restart."""

    record: DeliveryRecord
    notification: DeploymentEvent


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: datetime.datetime
    observed_generation: int | None = None
