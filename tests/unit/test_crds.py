"""The CRDs against the models they mirror, and the examples against both.

Two sources, one truth: ``crds/`` rejects bad objects at admission and
``operator/herald/models.py`` rejects them in the operator. These tests hold the two to the
same fields, enums, limits, defaults and messages; check that the schemas are structural,
described and bounded; and validate ``deploy/examples`` the way an API server would: OpenAPI
with ``jsonschema``, unknown fields refused (kubectl's strict field validation), list sets
unique, defaults applied, and the CEL rules run by a real CEL evaluator (cel-python).
"""

from __future__ import annotations

import base64
import copy
import datetime
import functools
import re
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from celpy import celtypes
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from herald import models
from herald.models import (
    CONTENT_TYPE_PATTERN,
    DEFAULT_CA_KEY,
    DEFAULT_DISABLE_AFTER,
    DEFAULT_SECRET_KEY,
    DEFAULT_SIGNING_KEY,
    DEFAULT_URL_KEY,
    DEPLOYMENT_EVENTS,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    HEADER_VALUE_PATTERN,
    MAX_CONTENT_TYPE_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_FILTER_ITEMS,
    MAX_HEADER_VALUE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_RATE_BURST,
    MAX_RATE_PER_SECOND,
    MAX_TEMPLATE_HEADERS,
    MAX_TEMPLATE_LENGTH,
    MAX_URL_LENGTH,
    MIN_RATE_PER_SECOND,
    MSG_CLOUDEVENTS_KIND,
    MSG_EVENTS_EMPTY,
    MSG_EVENTS_UNIQUE,
    MSG_HEADER_NAME,
    MSG_HEADER_RESERVED,
    MSG_ONE_SOURCE,
    MSG_TEMPLATE_KIND,
    MSG_URL_OR_SECRET,
    MSG_URL_SCHEME,
    RESERVED_HEADERS,
    URL_PATTERN,
    ArgoCDRef,
    Attempt,
    CloudEventsMode,
    CloudEventsOptions,
    Condition,
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    DeploymentsSource,
    DeploymentState,
    DeploymentStatus,
    EnvironmentRef,
    EnvironmentSource,
    EnvironmentSpec,
    EnvironmentType,
    EventType,
    LabelSelector,
    LabelSelectorRequirement,
    Named,
    PendingDelivery,
    RateLimit,
    SecretRef,
    Service,
    SourceRef,
    Template,
    WebhookKind,
    WebhookSpec,
)
from herald.settings import MAX_PENDING_LIMIT, Settings
from herald.sources import decide, status_patch
from herald.status import (
    ATTEMPT_LOG_LIMIT,
    NOTIFICATION_LOG_CAP,
    Counters,
    Pause,
    PauseReason,
    WebhookStatus,
    parse_webhook,
    to_patch,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "deploy" / "examples"
GROUP = "herald.dev"
VERSION = "v1alpha1"
HERALD_KINDS = ("Webhook", "ClusterWebhook", "Environment")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def _crds() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in _documents(path):
            if doc.get("kind") == "CustomResourceDefinition":
                found[doc["spec"]["names"]["kind"]] = doc
    return found


CRDS = _crds()
SCHEMAS = {kind: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for kind, crd in CRDS.items()}
EXAMPLE_FILES = sorted(p for p in EXAMPLES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
EXAMPLES = [doc for path in EXAMPLE_FILES for doc in _documents(path)]


def example(kind: str, name: str | None = None) -> dict[str, Any]:
    """A deep copy of the first example of ``kind`` (named ``name``, if given)."""
    for doc in EXAMPLES:
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"]):
            return copy.deepcopy(doc)
    raise LookupError(f"no {kind} {name or ''} in {EXAMPLES_DIR}")


# ---------------------------------------------------------------- schema walking


def node(schema: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The subschema at a dotted path; ``[]`` steps into a list's items (``spec.events[]``), ``{}``
    into a map's values (``spec.template.headers{}``)."""
    current: Any = schema
    for part in path.split("."):
        name, items, values = (
            part.removesuffix("[]").removesuffix("{}"),
            part.endswith("[]"),
            part.endswith("{}"),
        )
        current = current["properties"][name]
        if items:
            current = current["items"]
        if values:
            current = current["additionalProperties"]
    return dict(current)


def walk(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, str | None, Mapping[str, Any]]]:
    """Every subschema as (path, property name or None for items/values, subschema)."""
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}.{name}" if path else name
        yield where, name, sub
        yield from walk(sub, where)
    if isinstance(schema.get("items"), Mapping):
        yield f"{path}[]", None, schema["items"]
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield f"{path}{{}}", None, schema["additionalProperties"]
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def all_nodes(kind: str) -> Iterator[tuple[str, str | None, Mapping[str, Any]]]:
    yield "", None, SCHEMAS[kind]
    yield from walk(SCHEMAS[kind])


# ---------------------------------------------------------------- an API server's checks, offline


def _list_set(validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    """``x-kubernetes-list-type: set``: the API server refuses a repeated item."""
    if list_type != "set" or not validator.is_type(instance, "array"):
        return
    seen: list[Any] = []
    for item in instance:
        if item in seen:
            yield jsonschema.ValidationError(f"Duplicate value: {item!r}")
        seen.append(item)


KubeValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-type": _list_set}
)
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339 with a zone, as the API server checks ``format: date-time``."""
    if not isinstance(value, str):
        return True
    parsed = datetime.datetime.fromisoformat(value)
    return "T" in value and parsed.tzinfo is not None


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """The API server's defaulting: absent properties with a ``default`` get it, depth first."""
    if isinstance(value, dict):
        out = dict(value)
        for name, sub in schema.get("properties", {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = with_defaults(sub, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [with_defaults(schema["items"], item) for item in value]
    return value


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def unknown_fields(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare: pruned by the API server, refused by ``kubectl apply``."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or path == "metadata":
        return []
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, sub_value in value.items():
            if props is not None and key in props:
                found += unknown_fields(props[key], sub_value, _join(path, key))
            elif isinstance(extra, Mapping):
                found += unknown_fields(extra, sub_value, _join(path, key))
            else:
                found.append(f'{_join(path, key)}: unknown field "{key}"')
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            found += unknown_fields(schema["items"], item, _join(path, i))
    return found


_CEL = celpy.Environment()


@functools.cache
def _cel_program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule))


def cel_holds(rule: str, value: Any) -> bool:
    """Evaluate one ``x-kubernetes-validations`` rule with ``self`` bound to ``value``."""
    try:
        result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError:
        return False  # a rule that cannot be evaluated on a value rejects it, as in the API server
    return isinstance(result, celtypes.BoolType) and bool(result)


def cel_errors(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the CEL rules ``value`` breaks, evaluated wherever the schema declares them."""
    errors = [
        f"{path or '<root>'}: {rule['message']}"
        for rule in schema.get("x-kubernetes-validations", ())
        if not cel_holds(rule["rule"], value)
    ]
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += cel_errors(sub, value[key], _join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, _join(path, i))
    return errors


def rejections(kind: str, obj: Mapping[str, Any]) -> list[str]:
    """Everything an API server with these CRDs would say against ``obj`` (empty: accepted)."""
    schema = SCHEMAS[kind]
    value = with_defaults(schema, obj)
    errors = [
        f"{functools.reduce(_join, e.absolute_path, '') or '<root>'}: {e.message}"
        for e in KubeValidator(schema, format_checker=FORMATS).iter_errors(value)
    ]
    return errors + unknown_fields(schema, value) + cel_errors(schema, value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``None`` removes a field), as ``kubectl patch --type=merge``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def operator_error(obj: Mapping[str, Any]) -> str | None:
    """What the operator says of an object that got past admission: its one-line error, or None."""
    kind = obj["kind"]
    if kind in ("Webhook", "ClusterWebhook"):
        return parse_webhook(obj, cluster=kind == "ClusterWebhook").spec_error
    try:
        EnvironmentSpec.model_validate(obj.get("spec"))
    except ValidationError as exc:
        return models.first_error(exc)
    deployment = (obj.get("status") or {}).get("deployment")
    if deployment is None:
        return None
    try:
        DeploymentStatus.model_validate(deployment)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        return f"status.deployment.{'.'.join(map(str, error['loc']))}: {error['msg']}"
    return None


# ---------------------------------------------------------------- identity and kubectl experience

BUILTIN_SHORT_NAMES = {
    # `kubectl api-resources` of Kubernetes 1.32, short names column.
    "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc",
    "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol", "pdb", "pc",
    "sc", "vac",
}  # fmt: skip
BUILTIN_RESOURCES = {
    "bindings", "componentstatuses", "configmaps", "endpoints", "events", "limitranges", "namespaces",
    "nodes", "persistentvolumeclaims", "persistentvolumes", "pods", "podtemplates",
    "replicationcontrollers", "resourcequotas", "secrets", "serviceaccounts", "services",
    "mutatingwebhookconfigurations", "validatingwebhookconfigurations", "customresourcedefinitions",
    "apiservices", "controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets",
    "horizontalpodautoscalers", "cronjobs", "jobs", "certificatesigningrequests", "leases",
    "endpointslices", "flowschemas", "prioritylevelconfigurations", "ingressclasses", "ingresses",
    "networkpolicies", "runtimeclasses", "poddisruptionbudgets", "clusterrolebindings", "clusterroles",
    "rolebindings", "roles", "priorityclasses", "csidrivers", "csinodes", "csistoragecapacities",
    "storageclasses", "volumeattachments",
}  # fmt: skip

IDENTITY = [
    ("Webhook", "webhooks", "webhook", "hwh", "Namespaced"),
    ("ClusterWebhook", "clusterwebhooks", "clusterwebhook", "hcwh", "Cluster"),
    ("Environment", "environments", "environment", "henv", "Namespaced"),
]


def test_crds_folder_holds_exactly_the_three_kinds() -> None:
    assert sorted(CRDS) == sorted(HERALD_KINDS)
    listed = yaml.safe_load((CRD_DIR / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in CRD_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize(("kind", "plural", "singular", "short", "scope"), IDENTITY)
def test_crd_identity(kind: str, plural: str, singular: str, short: str, scope: str) -> None:
    crd = CRDS[kind]
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == scope
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
        "shortNames": [short],
        "categories": ["herald"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_names_collide_with_nothing_built_in() -> None:
    shorts = [s for crd in CRDS.values() for s in crd["spec"]["names"]["shortNames"]]
    plurals = [crd["spec"]["names"]["plural"] for crd in CRDS.values()]
    assert len(set(shorts)) == len(shorts)
    assert not set(shorts) & (BUILTIN_SHORT_NAMES | BUILTIN_RESOURCES)
    assert not set(plurals) & BUILTIN_RESOURCES


WEBHOOK_COLUMNS = [
    ("Kind", "string", ".spec.kind"),
    ("Enabled", "boolean", ".spec.enabled"),
    ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
    ("Last Outcome", "string", ".status.lastDelivery.outcome"),
    ("Last Delivery", "date", ".status.lastDelivery.time"),
    ("Age", "date", ".metadata.creationTimestamp"),
]
COLUMNS = {
    "Webhook": WEBHOOK_COLUMNS,
    "ClusterWebhook": WEBHOOK_COLUMNS,
    "Environment": [
        ("Project", "string", ".spec.project.name"),
        ("Type", "string", ".spec.type"),
        ("Deployment", "string", ".status.deployment.id"),
        ("Status", "string", ".status.deployment.currentStatus"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ],
}
COLUMN_TYPES = {"string": {"string"}, "boolean": {"boolean"}, "integer": {"integer"}, "date": {"string"}}


@pytest.mark.parametrize("kind", HERALD_KINDS)
def test_printer_columns(kind: str) -> None:
    columns = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [(c["name"], c["type"], c["jsonPath"]) for c in columns if not c.get("priority")]
    assert default == COLUMNS[kind]
    for column in columns:
        path = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"]).removeprefix(".")
        if path.startswith("metadata."):
            continue  # ObjectMeta's fields are the API server's own
        target = node(SCHEMAS[kind], path)
        assert target["type"] in COLUMN_TYPES[column["type"]], column
        if column["type"] == "date":
            assert target.get("format") == "date-time", column


# ---------------------------------------------------------------- structural, described, bounded


@pytest.mark.parametrize("kind", HERALD_KINDS)
def test_every_property_is_described_starting_with_its_name(kind: str) -> None:
    assert SCHEMAS[kind].get("description", "").startswith(kind)
    for path, name, sub in walk(SCHEMAS[kind]):
        if name is None or path == "metadata":
            continue  # the API server forbids specifying anything of metadata but its type
        description = sub.get("description", "")
        first = re.split(r"[^A-Za-z0-9]", description, maxsplit=1)[0]
        assert first.lower() == name.lower(), f"{kind} {path}: description must start with {name!r}"


FORBIDDEN_IN_STRUCTURAL = ("$ref", "nullable", "uniqueItems")
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# Inside a junctor, only value validations: no types, descriptions, defaults or extensions.
FORBIDDEN_IN_JUNCTORS = ("type", "description", "default", "additionalProperties", "nullable")


def junctor_branches(sub: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    branches: list[Mapping[str, Any]] = []
    for key in JUNCTORS:
        value = sub.get(key)
        for branch in value if isinstance(value, list) else [value] if value else []:
            branches += [branch, *junctor_branches(branch)]
            for child in (branch.get("properties") or {}).values():
                branches += [child, *junctor_branches(child)]
    return branches


@pytest.mark.parametrize("kind", HERALD_KINDS)
def test_schema_is_structural(kind: str) -> None:
    assert "x-kubernetes-preserve-unknown-fields" not in SCHEMAS[kind]["properties"]["status"]
    for path, _, sub in all_nodes(kind):
        where = f"{kind} {path or '<root>'}"
        assert sub.get("type") in ("object", "array", "string", "integer", "boolean", "number"), where
        assert not (set(sub) & set(FORBIDDEN_IN_STRUCTURAL)), where
        assert not ("properties" in sub and "additionalProperties" in sub), where
        for branch in junctor_branches(sub):
            assert not (set(branch) & set(FORBIDDEN_IN_JUNCTORS)), where
            assert not any(k.startswith("x-kubernetes-") for k in branch), where
        if "default" in sub:
            jsonschema.Draft202012Validator(sub).validate(sub["default"])
        if sub.get("x-kubernetes-list-type") == "set":
            assert sub["items"]["type"] in ("string", "integer", "boolean", "number"), where
        if sub.get("x-kubernetes-list-type") == "map":
            assert set(sub["x-kubernetes-list-map-keys"]) <= set(sub["items"]["required"]), where
    # kube-apiserver refuses a CRD whose schema specifies anything of metadata but its type.
    assert SCHEMAS[kind]["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", HERALD_KINDS)
def test_every_string_and_list_is_bounded(kind: str) -> None:
    """Bounds keep CEL cost estimates low and objects sane: strings have maxLength or enum, lists maxItems."""
    for path, _, sub in all_nodes(kind):
        if sub["type"] == "string":
            assert "maxLength" in sub or "enum" in sub, f"{kind} {path}: unbounded string"
        if sub["type"] == "array":
            assert "maxItems" in sub, f"{kind} {path}: unbounded list"
        if sub["type"] == "object" and isinstance(sub.get("additionalProperties"), Mapping):
            assert "maxProperties" in sub, f"{kind} {path}: unbounded map"


# ---------------------------------------------------------------- two sources, one truth


def _values(enum_type: Any) -> list[str]:
    return [member.value for member in enum_type]


ENUMS = [
    *(
        (kind, path, expected)
        for kind in ("Webhook", "ClusterWebhook")
        for path, expected in [
            ("spec.kind", _values(WebhookKind)),
            ("spec.cloudEvents.mode", _values(CloudEventsMode)),
            ("spec.events[]", [e.value for e in DEPLOYMENT_EVENTS]),
            ("spec.environmentTypesFilter[]", _values(EnvironmentType)),
            ("status.lastDelivery.event", _values(EventType)),
            ("status.lastDelivery.outcome", _values(DeliveryOutcome)),
            ("status.deliveries[].outcome", _values(DeliveryOutcome)),
            (
                "status.conditions[].status",
                list(typing.get_args(Condition.model_fields["status"].annotation)),
            ),
            ("status.pause.reason", _values(PauseReason)),
        ]
    ),
    (
        "ClusterWebhook",
        "spec.namespaceSelector.matchExpressions[].operator",
        list(typing.get_args(LabelSelectorRequirement.model_fields["operator"].annotation)),
    ),
    ("Environment", "spec.type", _values(EnvironmentType)),
    ("Environment", "status.deployment.currentStatus", _values(DeploymentState)),
    ("Environment", "status.deployment.desiredStatus", _values(DeploymentState)),
]


@pytest.mark.parametrize(("kind", "path", "expected"), ENUMS)
def test_enums_equal_the_models(kind: str, path: str, expected: list[str]) -> None:
    assert node(SCHEMAS[kind], path)["enum"] == expected


def test_events_enum_leaves_out_webhook_test() -> None:
    assert EventType.WEBHOOK_TEST.value not in node(SCHEMAS["Webhook"], "spec.events[]")["enum"]
    assert {*DEPLOYMENT_EVENTS, EventType.WEBHOOK_TEST} == set(EventType)


NAMESPACE_MAX_LENGTH = SecretRef.model_fields["namespace"].metadata[0].max_length
REF_FIELDS = [
    ("secretRef", DEFAULT_SECRET_KEY),
    ("urlSecretRef", DEFAULT_URL_KEY),
    ("signingSecretRef", DEFAULT_SIGNING_KEY),
    ("caSecretRef", DEFAULT_CA_KEY),
]
# What kube-apiserver answers a Webhook whose Secret ref names a namespace ("supported values: ...").
(REF_NAMESPACE_REASON,) = node(SCHEMAS["Webhook"], "spec.secretRef.namespace")["enum"]
LIMITS = (
    [
        (kind, path, facet, expected)
        for kind in ("Webhook", "ClusterWebhook")
        for path, facet, expected in [
            ("spec.url", "maxLength", MAX_URL_LENGTH),
            ("spec.description", "maxLength", MAX_DESCRIPTION_LENGTH),
            ("spec.events", "minItems", 1),
            ("spec.events", "maxItems", len(DEPLOYMENT_EVENTS)),
            ("spec.environmentTypesFilter", "maxItems", len(EnvironmentType)),
            ("spec.projectNamesFilter", "maxItems", MAX_FILTER_ITEMS),
            ("spec.projectNamesFilter[]", "maxLength", MAX_NAME_LENGTH),
            ("spec.projectNamesFilter[]", "minLength", 1),
            ("spec.enabled", "default", WebhookSpec.model_fields["enabled"].default),
            ("spec.template.body", "maxLength", MAX_TEMPLATE_LENGTH),
            ("spec.template.body", "minLength", 1),
            ("spec.template.contentType", "maxLength", MAX_CONTENT_TYPE_LENGTH),
            ("spec.template.contentType", "pattern", CONTENT_TYPE_PATTERN),
            ("spec.template.contentType", "default", Template.model_fields["content_type"].default),
            ("spec.template.headers", "maxProperties", MAX_TEMPLATE_HEADERS),
            ("spec.template.headers{}", "maxLength", MAX_HEADER_VALUE_LENGTH),
            ("spec.template.headers{}", "pattern", HEADER_VALUE_PATTERN),
            ("spec.cloudEvents.mode", "default", CloudEventsOptions.model_fields["mode"].default.value),
            ("spec.rateLimit.perSecond", "minimum", MIN_RATE_PER_SECOND),
            ("spec.rateLimit.perSecond", "maximum", MAX_RATE_PER_SECOND),
            ("spec.rateLimit.burst", "maximum", MAX_RATE_BURST),
            ("spec.rateLimit.burst", "default", RateLimit.model_fields["burst"].default),
            ("spec.disableAfter", "pattern", DURATION_PATTERN),
            ("spec.disableAfter", "default", DEFAULT_DISABLE_AFTER),
            ("status.deliveries", "maxItems", Settings().history_limit),
            ("status.sent", "maxItems", Settings().history_limit),
            ("status.deliveries[].attemptLog", "maxItems", ATTEMPT_LOG_LIMIT),
            *(
                item
                for field, default in REF_FIELDS
                for item in [
                    (f"spec.{field}.name", "pattern", DNS_SUBDOMAIN_PATTERN),
                    (f"spec.{field}.name", "maxLength", MAX_NAME_LENGTH),
                    (f"spec.{field}.name", "minLength", 1),
                    (f"spec.{field}.key", "maxLength", MAX_NAME_LENGTH),
                    (f"spec.{field}.key", "minLength", 1),
                    (f"spec.{field}.key", "default", default),
                ]
            ),
        ]
    ]
    + [
        (kind, f"spec.{field}.namespace", "maxLength", NAMESPACE_MAX_LENGTH)
        for kind in ("Webhook", "ClusterWebhook")
        for field, _ in REF_FIELDS
    ]
    + [
        ("Environment", "status.deployment.id", "maxLength", MAX_NAME_LENGTH),
        ("Environment", "status.deployment.id", "minLength", 1),
        ("Environment", "status.deployment.applications", "maxItems", 256),
        ("Environment", "spec.source", "maxProperties", 1),  # at most one source, on every Kubernetes
    ]
    + [
        ("Environment", f"spec.source.{field}.{path}", facet, expected)
        for field in ("argoCDApplication", "fluxKustomization", "fluxHelmRelease")
        for path, facet, expected in [
            ("name", "pattern", DNS_SUBDOMAIN_PATTERN),
            ("name", "maxLength", MAX_NAME_LENGTH),
            ("name", "minLength", 1),
            ("namespace", "maxLength", SourceRef.model_fields["namespace"].metadata[1].max_length),
            ("namespace", "minLength", 1),
        ]
    ]
)


@pytest.mark.parametrize(("kind", "path", "facet", "expected"), LIMITS)
def test_limits_patterns_and_defaults_equal_the_models(
    kind: str, path: str, facet: str, expected: Any
) -> None:
    assert node(SCHEMAS[kind], path)[facet] == expected


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_pending_bound_is_the_one_the_max_pending_flag_is_held_to(kind: str) -> None:
    assert node(SCHEMAS[kind], "status.pending")["maxItems"] == MAX_PENDING_LIMIT >= Settings().max_pending


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
@pytest.mark.parametrize(("field", "default"), REF_FIELDS)
def test_defaulted_ref_keys_are_the_keys_the_operator_reads(kind: str, field: str, default: str) -> None:
    spec = example(kind)["spec"]
    ref = {"name": "creds", **({"namespace": "demo"} if kind == "ClusterWebhook" else {})}
    spec[field] = ref
    if field == "urlSecretRef":
        spec.pop("url")
    defaulted = with_defaults(node(SCHEMAS[kind], "spec"), spec)
    operator_view = getattr(WebhookSpec.model_validate(spec), re.sub(r"(?<!^)([A-Z])", r"_\1", field).lower())
    assert defaulted[field]["key"] == operator_view.key == default


def test_cel_messages_are_the_models_constants() -> None:
    for kind in ("Webhook", "ClusterWebhook"):
        rules = {
            rule["message"]: rule["rule"]
            for _, _, sub in all_nodes(kind)
            for rule in sub.get("x-kubernetes-validations", ())
        }
        assert set(rules) == {
            MSG_URL_OR_SECRET,
            MSG_URL_SCHEME,
            MSG_EVENTS_EMPTY,
            MSG_EVENTS_UNIQUE,
            MSG_TEMPLATE_KIND,
            MSG_CLOUDEVENTS_KIND,
            MSG_HEADER_NAME,
            MSG_HEADER_RESERVED,
        }
        assert rules[MSG_URL_OR_SECRET] == "has(self.url) != has(self.urlSecretRef)"
        reserved = re.fullmatch(
            r"self\.all\(k, !k\.matches\('\(\?i\)\^\((.*)\)\$'\)\)", rules[MSG_HEADER_RESERVED]
        )
        assert reserved is not None
        assert set(reserved.group(1).split("|")) == RESERVED_HEADERS
        assert rules[MSG_URL_SCHEME] == f"self.matches(r'{URL_PATTERN}')"
    assert not list(
        rule for _, _, sub in all_nodes("Environment") for rule in sub.get("x-kubernetes-validations", ())
    )


def _aliases(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def _required(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items() if info.is_required()}


# (kind, schema path, model, fields the schema leaves out, whether `required` must match the model's)
FIELDS = [
    ("ClusterWebhook", "spec", WebhookSpec, set(), True),
    ("Webhook", "spec", WebhookSpec, {"namespaceSelector"}, True),
    ("ClusterWebhook", "spec.namespaceSelector", LabelSelector, set(), True),
    ("ClusterWebhook", "spec.namespaceSelector.matchExpressions[]", LabelSelectorRequirement, set(), True),
    *(
        (kind, path, model, set(), True)
        for kind in ("Webhook", "ClusterWebhook")
        for path, model in [
            ("spec.template", Template),
            ("spec.cloudEvents", CloudEventsOptions),
            ("spec.rateLimit", RateLimit),
        ]
    ),
    *(("ClusterWebhook", f"spec.{field}", SecretRef, set(), False) for field, _ in REF_FIELDS),
    *(("Webhook", f"spec.{field}", SecretRef, set(), False) for field, _ in REF_FIELDS),
    *(
        (kind, path, model, set(), True)
        for kind in ("Webhook", "ClusterWebhook")
        for path, model in [
            ("status", WebhookStatus),
            ("status.conditions[]", Condition),
            ("status.lastDelivery", DeliveryRecord),
            ("status.deliveries[]", DeliveryRecord),
            ("status.deliveries[].attemptLog[]", Attempt),
            ("status.pending[]", PendingDelivery),
            ("status.pending[].record", DeliveryRecord),
            ("status.counters", Counters),
            ("status.pause", Pause),
        ]
    ),
    ("Environment", "spec", EnvironmentSpec, set(), True),
    ("Environment", "spec.organization", Named, set(), True),
    ("Environment", "spec.project", Named, set(), True),
    *(
        ("Environment", f"spec.{field}[]", Service, set(), True)
        for field in ("applications", "databases", "containers", "jobs")
    ),
    ("Environment", "status.deployment", DeploymentStatus, set(), True),
    ("Environment", "status.deployment.applications[]", Service, set(), True),
    ("Environment", "status.conditions[]", Condition, set(), True),
    ("Environment", "spec.source", EnvironmentSource, set(), True),
    ("Environment", "spec.source.deployments", DeploymentsSource, set(), True),
    ("Environment", "spec.source.deployments.selector", LabelSelector, set(), True),
    (
        "Environment",
        "spec.source.deployments.selector.matchExpressions[]",
        LabelSelectorRequirement,
        set(),
        True,
    ),
    ("Environment", "spec.source.argoCDApplication", ArgoCDRef, set(), True),
    ("Environment", "spec.source.fluxKustomization", SourceRef, set(), True),
    ("Environment", "spec.source.fluxHelmRelease", SourceRef, set(), True),
]


@pytest.mark.parametrize(("kind", "path", "model", "left_out", "same_required"), FIELDS)
def test_fields_equal_the_models(
    kind: str, path: str, model: type[BaseModel], left_out: set[str], same_required: bool
) -> None:
    """A field the operator writes but the schema lacks is pruned by the API server: the sets must match."""
    sub = node(SCHEMAS[kind], path)
    assert set(sub["properties"]) == _aliases(model) - left_out
    if same_required:
        assert set(sub.get("required", ())) == _required(model) - left_out


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_notifications_keep_every_field(kind: str) -> None:
    for path in ("status.pending[].notification", "status.sent[]"):
        assert node(SCHEMAS[kind], path)["x-kubernetes-preserve-unknown-fields"] is True


# ---------------------------------------------------------------- the examples


def test_examples_cover_each_kind() -> None:
    kinds = [doc["kind"] for doc in EXAMPLES]
    assert kinds.count("Webhook") == 4
    assert {doc["spec"]["kind"] for doc in EXAMPLES if doc["kind"] == "Webhook"} == {
        "STANDARD",
        "SLACK",
        "CLOUDEVENTS",
        "CUSTOM",
    }
    assert {"Namespace", "Secret", "ClusterWebhook", "Environment"} <= set(kinds)
    assert all(len(_documents(path)) == 1 for path in EXAMPLE_FILES), "one object per file"


@pytest.mark.parametrize(
    "doc",
    [d for d in EXAMPLES if d["kind"] in HERALD_KINDS],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_example_is_accepted_by_the_crd_and_the_operator(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == f"{GROUP}/{VERSION}"
    assert rejections(doc["kind"], doc) == []
    if doc["kind"] == "Environment":
        EnvironmentSpec.model_validate(doc["spec"])
    else:
        WebhookSpec.model_validate(doc["spec"])
    assert operator_error(doc) is None


def test_example_secret_refs_resolve_to_the_example_secret() -> None:
    secrets = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): {
            **{k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()},
            **d.get("stringData", {}),
        }
        for d in EXAMPLES
        if d["kind"] == "Secret"
    }
    for doc in (d for d in EXAMPLES if d["kind"] in ("Webhook", "ClusterWebhook")):
        spec = with_defaults(SCHEMAS[doc["kind"]], doc)["spec"]
        for field, _ in REF_FIELDS:
            if field in spec:
                ref = spec[field]
                namespace = ref.get("namespace") or doc["metadata"]["namespace"]
                assert ref["key"] in secrets[(namespace, ref["name"])], f"{doc['metadata']['name']}.{field}"
    [values] = secrets.values()
    key = base64.b64decode(values[DEFAULT_SIGNING_KEY].removeprefix("whsec_"), validate=True)
    assert values[DEFAULT_SIGNING_KEY].startswith("whsec_")
    assert 24 <= len(key) <= 64
    assert values[DEFAULT_URL_KEY].startswith("https://hooks.slack.com/")


# ---------------------------------------------------------------- what is rejected

STANDARD = ("Webhook", "shop-deployments")
CLUSTER = ("ClusterWebhook", "deployment-audit")
ENVIRONMENT = ("Environment", "shop-frontend-production")
SLACK_URL_REF = {"name": "herald-demo", "key": "url"}

# (case id, example, merge patch, CEL message expected or None,
#  whether the operator's parser rejects it too; None where the operator enforces it elsewhere)
INVALID = [
    ("unknown kind", STANDARD, {"spec": {"kind": "DISCORD"}}, None, True),
    ("custom without template", STANDARD, {"spec": {"kind": "CUSTOM"}}, MSG_TEMPLATE_KIND, True),
    (
        "template on a STANDARD webhook",
        STANDARD,
        {"spec": {"template": {"body": "{}"}}},
        MSG_TEMPLATE_KIND,
        True,
    ),
    ("empty template", STANDARD, {"spec": {"kind": "CUSTOM", "template": {"body": ""}}}, None, True),
    (
        "template too long",
        STANDARD,
        {"spec": {"kind": "CUSTOM", "template": {"body": "x" * (MAX_TEMPLATE_LENGTH + 1)}}},
        None,
        True,
    ),
    (
        "bad content type",
        STANDARD,
        {"spec": {"kind": "CUSTOM", "template": {"body": "{}", "contentType": "json"}}},
        None,
        True,
    ),
    (
        "header name with a colon",
        STANDARD,
        {"spec": {"kind": "CUSTOM", "template": {"body": "{}", "headers": {"X-A:b": "1"}}}},
        MSG_HEADER_NAME,
        True,
    ),
    *(
        (
            f"reserved header {name}",
            STANDARD,
            {"spec": {"kind": "CUSTOM", "template": {"body": "{}", "headers": {name: "1"}}}},
            MSG_HEADER_RESERVED,
            True,
        )
        for name in ("Content-Type", "qovery-secret", "Webhook-Signature", "HOST")
    ),
    (
        "header value with a newline",
        STANDARD,
        {"spec": {"kind": "CUSTOM", "template": {"body": "{}", "headers": {"X-A": "a\r\nb: c"}}}},
        None,
        True,
    ),
    (
        "too many headers",
        STANDARD,
        {
            "spec": {
                "kind": "CUSTOM",
                "template": {
                    "body": "{}",
                    "headers": {f"X-{i}": "1" for i in range(MAX_TEMPLATE_HEADERS + 1)},
                },
            }
        },
        None,
        True,
    ),
    (
        "cloudEvents on a STANDARD webhook",
        STANDARD,
        {"spec": {"cloudEvents": {"mode": "binary"}}},
        MSG_CLOUDEVENTS_KIND,
        True,
    ),
    (
        "unknown cloudEvents mode",
        STANDARD,
        {"spec": {"kind": "CLOUDEVENTS", "cloudEvents": {"mode": "batched"}}},
        None,
        True,
    ),
    ("rate of zero", STANDARD, {"spec": {"rateLimit": {"perSecond": 0}}}, None, True),
    ("rate too high", STANDARD, {"spec": {"rateLimit": {"perSecond": 1000}}}, None, True),
    ("rate without perSecond", STANDARD, {"spec": {"rateLimit": {"burst": 2}}}, None, True),
    ("burst of zero", STANDARD, {"spec": {"rateLimit": {"perSecond": 1, "burst": 0}}}, None, True),
    ("disableAfter in days", STANDARD, {"spec": {"disableAfter": "5d"}}, None, True),
    ("disableAfter negative", STANDARD, {"spec": {"disableAfter": "-1h"}}, None, True),
    ("cluster template on SLACK", CLUSTER, {"spec": {"template": {"body": "{}"}}}, MSG_TEMPLATE_KIND, True),
    ("missing kind", STANDARD, {"spec": {"kind": None}}, None, True),
    ("missing events", STANDARD, {"spec": {"events": None}}, None, True),
    ("empty events", STANDARD, {"spec": {"events": []}}, MSG_EVENTS_EMPTY, True),
    ("unknown event", STANDARD, {"spec": {"events": ["DEPLOYMENT_EXPLODED"]}}, None, True),
    ("ping is not an event", STANDARD, {"spec": {"events": ["WEBHOOK_TEST"]}}, None, True),
    (
        "duplicate event",
        STANDARD,
        {"spec": {"events": ["DEPLOYMENT_STARTED", "DEPLOYMENT_STARTED"]}},
        MSG_EVENTS_UNIQUE,
        True,
    ),
    ("ftp url", STANDARD, {"spec": {"url": "ftp://receiver.demo.svc/hooks"}}, MSG_URL_SCHEME, True),
    ("javascript url", STANDARD, {"spec": {"url": "javascript:alert(1)"}}, MSG_URL_SCHEME, True),
    ("url without scheme", STANDARD, {"spec": {"url": "receiver.demo.svc:8080/hooks"}}, MSG_URL_SCHEME, True),
    ("url without host", STANDARD, {"spec": {"url": "https:///hooks"}}, MSG_URL_SCHEME, True),
    ("url with a space", STANDARD, {"spec": {"url": "https://receiver demo/hooks"}}, MSG_URL_SCHEME, True),
    ("url too long", STANDARD, {"spec": {"url": "https://r.example/" + "a" * MAX_URL_LENGTH}}, None, True),
    (
        "both url and urlSecretRef",
        STANDARD,
        {"spec": {"urlSecretRef": SLACK_URL_REF}},
        MSG_URL_OR_SECRET,
        True,
    ),
    ("neither url nor urlSecretRef", STANDARD, {"spec": {"url": None}}, MSG_URL_OR_SECRET, True),
    ("unknown environment type", STANDARD, {"spec": {"environmentTypesFilter": ["QA"]}}, None, True),
    ("empty project glob", STANDARD, {"spec": {"projectNamesFilter": [""]}}, None, True),
    (
        "too many project globs",
        STANDARD,
        {"spec": {"projectNamesFilter": [f"p{i}*" for i in range(MAX_FILTER_ITEMS + 1)]}},
        None,
        True,
    ),
    (
        "description too long",
        STANDARD,
        {"spec": {"description": "d" * (MAX_DESCRIPTION_LENGTH + 1)}},
        None,
        True,
    ),
    ("secret ref without name", STANDARD, {"spec": {"secretRef": {"name": None}}}, None, True),
    ("secret ref with a bad name", STANDARD, {"spec": {"secretRef": {"name": "Herald_Demo"}}}, None, True),
    ("signing ref without name", STANDARD, {"spec": {"signingSecretRef": {"name": None}}}, None, True),
    (
        "namespaceSelector on a Webhook",
        STANDARD,
        {"spec": {"namespaceSelector": {"matchLabels": {"a": "b"}}}},
        None,
        True,
    ),
    # Admission refuses the field (see test_a_webhook_ref_naming_a_namespace_is_refused_saying_why).
    (
        "secret ref naming a namespace on a Webhook",
        STANDARD,
        {"spec": {"secretRef": {"namespace": "kube-system"}}},
        None,
        True,
    ),
    (
        "cluster secretRef without namespace",
        CLUSTER,
        {"spec": {"secretRef": {"namespace": None}}},
        None,
        True,
    ),
    (
        "cluster urlSecretRef without namespace",
        CLUSTER,
        {"spec": {"url": None, "urlSecretRef": SLACK_URL_REF}},
        None,
        True,
    ),
    (
        "cluster selector with unknown operator",
        CLUSTER,
        {"spec": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Like"}]}}},
        None,
        True,
    ),
    (
        "cluster both url and urlSecretRef",
        CLUSTER,
        {"spec": {"urlSecretRef": {**SLACK_URL_REF, "namespace": "demo"}}},
        MSG_URL_OR_SECRET,
        True,
    ),
    ("cluster ftp url", CLUSTER, {"spec": {"url": "ftp://audit.example.com/"}}, MSG_URL_SCHEME, True),
    ("unknown environment type", ENVIRONMENT, {"spec": {"type": "QA"}}, None, True),
    ("missing environment type", ENVIRONMENT, {"spec": {"type": None}}, None, True),
    ("missing project", ENVIRONMENT, {"spec": {"project": None}}, None, True),
    ("project without name", ENVIRONMENT, {"spec": {"project": {"name": None}}}, None, True),
    ("service without name", ENVIRONMENT, {"spec": {"applications": [{"id": "a1"}]}}, None, True),
    (
        "unknown deployment state",
        ENVIRONMENT,
        {"status": {"deployment": {"id": "d1", "currentStatus": "EXPLODED"}}},
        None,
        True,
    ),
    (
        "deployment without id",
        ENVIRONMENT,
        {"status": {"deployment": {"currentStatus": "QUEUED"}}},
        None,
        True,
    ),
    (
        "two sources",
        ENVIRONMENT,
        {"spec": {"source": {"fluxKustomization": {"name": "a"}, "fluxHelmRelease": {"name": "b"}}}},
        None,
        True,
    ),
    (
        "Argo CD Application without namespace",
        ENVIRONMENT,
        {"spec": {"source": {"argoCDApplication": {"name": "shop"}}}},
        None,
        True,
    ),
    ("deployments without selector", ENVIRONMENT, {"spec": {"source": {"deployments": {}}}}, None, True),
    (
        "source naming a bad object name",
        ENVIRONMENT,
        {"spec": {"source": {"fluxKustomization": {"name": "Shop_App"}}}},
        None,
        True,
    ),
    ("unknown source", ENVIRONMENT, {"spec": {"source": {"jenkins": {"name": "x"}}}}, None, None),
]


@pytest.mark.parametrize("field", [field for field, _ in REF_FIELDS])
@pytest.mark.parametrize("namespace", ["kube-system", "", REF_NAMESPACE_REASON])
def test_a_webhook_ref_naming_a_namespace_is_refused_saying_why(field: str, namespace: str) -> None:
    """A field the schema lacks is pruned silently by a real API server, so the schema declares
    ``namespace`` with a rule no value passes, whose message (an enum's one value, which
    kube-apiserver prints as "supported values") says what to do."""
    spec = example("Webhook", STANDARD[1])["spec"]
    spec[field] = {"name": "creds", "namespace": namespace}
    if field == "urlSecretRef":
        spec.pop("url")
    obj = {**example("Webhook", STANDARD[1]), "spec": spec}
    errors = rejections("Webhook", obj)
    assert any(e.startswith(f"spec.{field}.namespace: ") and REF_NAMESPACE_REASON in e for e in errors), (
        errors
    )
    assert not unknown_fields(SCHEMAS["Webhook"], obj)  # refused by a rule the API server runs, not pruned
    assert "own namespace" in REF_NAMESPACE_REASON
    assert "ClusterWebhook" in REF_NAMESPACE_REASON
    assert node(SCHEMAS["Webhook"], f"spec.{field}.namespace")["enum"] == [REF_NAMESPACE_REASON]
    if len(namespace) <= NAMESPACE_MAX_LENGTH:  # what got past an older schema, the operator refuses
        assert "own namespace" in (operator_error(obj) or "")


@pytest.mark.parametrize(
    ("case", "which", "patch", "message", "operator_rejects"),
    INVALID,
    ids=[f"{c[1][0]}: {c[0]}" for c in INVALID],
)
def test_invalid_object_is_rejected(
    case: str,
    which: tuple[str, str],
    patch: dict[str, Any],
    message: str | None,
    operator_rejects: bool | None,
) -> None:
    kind, name = which
    base = example(kind, name)
    assert rejections(kind, base) == []  # so the patch alone is what gets rejected
    obj = merge_patch(base, patch)
    errors = rejections(kind, obj)
    assert errors, f"{case}: accepted"
    if message is not None:
        assert any(error.endswith(f": {message}") for error in errors), errors
    if operator_rejects:
        error = operator_error(obj)
        assert error is not None, f"{case}: the operator accepts what admission refuses"
        if message is not None:
            assert message in error


@pytest.mark.parametrize(
    "patch",
    [
        {"rateLimit": {"perSecond": 0.5}},
        {"rateLimit": {"perSecond": MIN_RATE_PER_SECOND, "burst": 100}},
        {"disableAfter": "1h30m"},
        {"disableAfter": "0s"},
        {"kind": "CLOUDEVENTS", "cloudEvents": {"mode": "binary"}},
        {"kind": "CLOUDEVENTS"},
        {"kind": "TEAMS"},
        {
            "kind": "CUSTOM",
            "template": {"body": "{{ event_type }}", "contentType": "text/plain; charset=utf-8"},
        },
        {"kind": "CUSTOM", "template": {"body": "{}", "headers": {"X-Api-Key-Id": "a b", "x-team": ""}}},
    ],
)
def test_new_fields_accepted_by_the_crd_and_the_operator(patch: dict[str, Any]) -> None:
    obj = merge_patch(example(*STANDARD), {"spec": patch})
    assert rejections("Webhook", obj) == []
    assert operator_error(obj) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://receiver.demo.svc:8080/hooks",
        "https://hooks.example.com",
        "https://h.example/p?q=1#f",
        "HTTP://x",
    ],
)
def test_url_rule_accepts_what_the_model_accepts(url: str) -> None:
    rule = node(SCHEMAS["Webhook"], "spec.url")["x-kubernetes-validations"][0]["rule"]
    accepted = "HTTP://" not in url
    assert cel_holds(rule, url) is accepted
    assert (re.fullmatch(URL_PATTERN, url) is not None) is accepted


# Python's `re` and RE2 (CEL's engine, in cel-python as in the API server) read `\s`, `\S` and `$`
# differently for \v, non-ASCII spaces and a trailing newline: the alphabet stays where they agree.
URL_ALPHABET = st.sampled_from([*"abcxyz019-._~:/?#[]@!$&'()*+,;=% \t", "http://", "https://", "ftp://"])


@given(st.lists(URL_ALPHABET, max_size=12).map("".join))
def test_url_rule_agrees_with_the_model(url: str) -> None:
    spec = {"kind": "STANDARD", "events": ["DEPLOYMENT_STARTED"], "url": url}
    crd_ok = not rejections("Webhook", {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Webhook", "spec": spec})
    try:
        WebhookSpec.model_validate(spec)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert crd_ok is model_ok


@given(st.lists(st.sampled_from([*_values(EventType), "DEPLOYMENT_EXPLODED", ""]), max_size=6))
def test_events_rules_agree_with_the_model(events: list[str]) -> None:
    spec = {"kind": "SLACK", "events": events, "urlSecretRef": {"name": "s"}}
    crd_ok = not rejections("Webhook", {"spec": spec})
    try:
        WebhookSpec.model_validate(spec)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert crd_ok is model_ok


# ---------------------------------------------------------------- what the operator writes is accepted

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)


def _full_status() -> dict[str, Any]:
    """A status with every field set, as Herald's status writer serializes it."""
    event = DeploymentEvent(
        event_type=EventType.DEPLOYMENT_FAILURE,
        payload_id="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        created_at=NOW,
        environment=EnvironmentRef(uid="u1", name="shop", namespace="demo", type=EnvironmentType.PRODUCTION),
        organization=Named(name="Acme"),
        project=Named(id="p1", name="shop-frontend"),
        deployment=DeploymentStatus(id="d1", current_status=DeploymentState.DEPLOYMENT_ERROR, logs=("boom",)),
        applications=(Service.model_validate({"name": "storefront", "commitId": "3f9a2c1"}),),
    )
    attempt = Attempt(number=1, time=NOW, http_status=503, error="HTTP 503", duration_ms=12)
    record = DeliveryRecord(
        payload_id=event.payload_id,
        event=event.event_type,
        environment="demo/shop",
        deployment_id="d1",
        attempts=1,
        http_status=503,
        error="HTTP 503",
        time=NOW,
        outcome=DeliveryOutcome.RETRYING,
        duration_ms=12,
        next_attempt_at=NOW,
        attempt_log=(attempt,),
    )
    ready = Condition(
        type="Ready",
        status="False",
        reason="Gone",
        message="paused",
        last_transition_time=NOW,
        observed_generation=2,
    )
    status = WebhookStatus(
        failing_since=NOW,
        handled_enable="1",
        observed_generation=2,
        conditions=(ready,),
        last_delivery=record,
        deliveries=(record,),
        pending=(PendingDelivery(record=record, notification=event),),
        sent=(event,),
        counters=Counters(delivered=3, failed=1, retried=2, dropped=0),
        consecutive_failures=1,
        pause=Pause(reason=PauseReason.GONE, generation=2, policy="abc123"),
        handled_ping="1",
        handled_redeliver="failed",
    )
    patch = to_patch(status, cap=NOTIFICATION_LOG_CAP)
    assert None not in patch.values(), "every field set"
    return patch


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_status_the_operator_writes_is_accepted_and_kept_whole(kind: str) -> None:
    obj = merge_patch(example(*(STANDARD if kind == "Webhook" else CLUSTER)), {"status": _full_status()})
    assert rejections(kind, obj) == []


def test_environment_status_the_models_read_is_accepted() -> None:
    deployment = DeploymentStatus(
        id="d1",
        current_status=DeploymentState.DEPLOYING,
        desired_status=DeploymentState.DEPLOYED,
        logs=("pulling", "starting"),
        message="rolling out",
        started_at="2026-01-01T12:00:00Z",
        finished_at="2026-01-01T12:05:00Z",
        triggered_by="alice@example.com",
    )
    status = {"deployment": deployment.model_dump(mode="json", by_alias=True, exclude_none=True)}
    assert set(status["deployment"]) == _aliases(DeploymentStatus)
    assert rejections("Environment", {**example(*ENVIRONMENT), "status": status}) == []


SOURCES_ACCEPTED = [
    {"deployments": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": "shop"}}}},
    {
        "deployments": {
            "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}
        }
    },
    {"argoCDApplication": {"name": "shop", "namespace": "argocd"}},
    {"fluxKustomization": {"name": "shop"}},
    {"fluxHelmRelease": {"name": "shop", "namespace": "flux-system"}},
]


@pytest.mark.parametrize("source", SOURCES_ACCEPTED)
def test_each_source_is_accepted_by_the_crd_and_the_operator(source: dict[str, Any]) -> None:
    obj = merge_patch(example(*ENVIRONMENT), {"spec": {"source": source}})
    assert rejections("Environment", obj) == []
    assert operator_error(obj) is None


def test_two_sources_are_refused_with_the_models_message() -> None:
    obj = merge_patch(
        example(*ENVIRONMENT),
        {
            "spec": {
                "source": {
                    "fluxKustomization": {"name": "a"},
                    "argoCDApplication": {"name": "b", "namespace": "c"},
                }
            }
        },
    )
    assert [e for e in rejections("Environment", obj) if e.startswith("spec.source:") and "too many" in e]
    assert MSG_ONE_SOURCE in (operator_error(obj) or "")


def test_the_status_herald_writes_from_a_source_is_accepted_and_kept_whole() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "uid": "u-web",
            "generation": 2,
            "labels": {"app": "web"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
        "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    }
    verdict = decide(
        "deployments", [deployment], None, namespace="demo", name=None, now="2026-01-01T12:00:00Z"
    )
    patch = status_patch(verdict, {}, "2026-01-01T12:00:00Z", generation=3)
    assert patch is not None
    obj = merge_patch(example(*ENVIRONMENT), {"status": patch})
    assert rejections("Environment", obj) == []
    assert obj["status"]["deployment"]["applications"][0]["images"] == ["web:1"]  # kept, not pruned
    assert operator_error(obj) is None
