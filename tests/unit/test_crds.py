"""The CRDs against the models they mirror, and the examples against both.

Two sources, one truth: ``crds/`` rejects bad objects at admission and
``operator/herald/models.py`` rejects them in the operator. These tests hold the two to the
same fields, enums, limits, defaults and messages; check that the schemas are structural,
described and bounded; and validate ``deploy/examples`` the way an API server would: OpenAPI
with ``jsonschema``, unknown fields refused (kubectl's strict field validation), list sets
unique, defaults applied, and the CEL rules run by a real CEL evaluator (cel-python).

Delivery objects and the webhooks' summary status are held to the Delivery contract (issue 12):
a full Delivery written here from that contract validates, and Herald 0.1's status arrays stay
in the schema, so the API server keeps them until Herald migrates them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import functools
import hashlib
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
from herald.decision import ATTEMPT_LOG_LIMIT
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
    DeploymentsSource,
    DeploymentState,
    DeploymentStatus,
    EnvironmentSource,
    EnvironmentSpec,
    EnvironmentType,
    EventType,
    LabelSelector,
    LabelSelectorRequirement,
    Named,
    RateLimit,
    SecretRef,
    Service,
    SourceRef,
    Template,
    WebhookKind,
    WebhookSpec,
)
from herald.sources import decide, status_patch
from herald.status import Pause, PauseReason, parse_webhook

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "deploy" / "examples"
GROUP = "herald.dev"
VERSION = "v1alpha1"
HERALD_KINDS = ("Webhook", "ClusterWebhook", "Environment", "Delivery")


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

# (kind, plural, singular, short name, scope, status subresource)
IDENTITY = [
    ("Webhook", "webhooks", "webhook", "hwh", "Namespaced", True),
    ("ClusterWebhook", "clusterwebhooks", "clusterwebhook", "hcwh", "Cluster", True),
    ("Environment", "environments", "environment", "henv", "Namespaced", True),
    # Herald creates a Delivery with its outcome in one write: no status subresource.
    ("Delivery", "deliveries", "delivery", "hdl", "Namespaced", False),
]


def test_crds_folder_holds_exactly_the_four_kinds() -> None:
    assert sorted(CRDS) == sorted(HERALD_KINDS)
    listed = yaml.safe_load((CRD_DIR / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in CRD_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize(("kind", "plural", "singular", "short", "scope", "status"), IDENTITY)
def test_crd_identity(kind: str, plural: str, singular: str, short: str, scope: str, status: bool) -> None:
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
    assert version.get("subresources") == ({"status": {}} if status else None)


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
    ("Pending", "integer", ".status.pendingDeliveries"),
    ("Age", "date", ".metadata.creationTimestamp"),
]
# (name, type, jsonPath, priority): every column of `kubectl get deliveries [-o wide]`.
DELIVERY_COLUMNS = [
    ("Webhook", "string", ".spec.webhook.name", 0),
    ("Event", "string", ".spec.event", 0),
    ("Environment", "string", ".spec.environment.name", 0),
    ("Outcome", "string", ".status.outcome", 0),
    ("Attempts", "integer", ".status.attempts", 0),
    ("HTTP", "integer", ".status.httpStatus", 0),
    ("Next", "date", ".status.nextAttemptAt", 1),
    ("Payload", "string", ".spec.payloadId", 1),
    ("Age", "date", ".metadata.creationTimestamp", 0),
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
    "Delivery": [column[:3] for column in DELIVERY_COLUMNS if not column[3]],
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
        assert column.get("description") or column["name"] == "Age", f"{kind} column {column['name']}"


def test_delivery_columns_wide_included() -> None:
    columns = CRDS["Delivery"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in columns] == DELIVERY_COLUMNS


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


# Herald 0.1 kept its queue and history on the status; 0.2 migrates them into Delivery objects.
LEGACY_ARRAYS = ("pending", "sent", "deliveries")
LEGACY_MAX_ITEMS = 1000  # Herald 0.1's CRDs allowed 1000 pending, 20 deliveries and 20 sent


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_summary_status_is_bounded_but_for_the_legacy_arrays(kind: str) -> None:
    """The status is a summary: no string, list or object under it grows without a bound, except
    Herald 0.1's arrays, kept as written until migrated."""
    status = node(SCHEMAS[kind], "status")
    for path, _, sub in walk(status, "status"):
        if path.split(".")[1].removesuffix("[]") in LEGACY_ARRAYS:
            continue
        where = f"{kind} {path}"
        if sub["type"] == "string":
            assert "maxLength" in sub or "enum" in sub or sub.get("format") == "date-time", where
        if sub["type"] == "array":
            assert "maxItems" in sub, where
        if sub["type"] == "object":
            assert not sub.get("x-kubernetes-preserve-unknown-fields"), where
            assert "properties" in sub or "maxProperties" in sub, where


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
    ("Delivery", "spec.webhook.kind", ["Webhook", "ClusterWebhook"]),
    ("Delivery", "spec.event", _values(EventType)),
    ("Delivery", "status.outcome", _values(DeliveryOutcome)),
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
DELIVERY_TIMES = ("lastAttemptAt", "nextAttemptAt", "finishedAt")
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
            *((f"status.{legacy}", "maxItems", LEGACY_MAX_ITEMS) for legacy in LEGACY_ARRAYS),
            ("status.pendingDeliveries", "minimum", 0),
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
        ("Delivery", path, facet, expected)
        for path, facet, expected in [
            ("spec.payloadId", "maxLength", 64),
            ("spec.deploymentId", "maxLength", MAX_NAME_LENGTH),
            ("spec.createdAt", "format", "date-time"),
            ("status.attempts", "minimum", 0),
            ("status.error", "maxLength", 1024),
            ("status.attemptLog", "maxItems", ATTEMPT_LOG_LIMIT),
            ("status.attemptLog[].error", "maxLength", 1024),
            *((f"status.{field}", "format", "date-time") for field in DELIVERY_TIMES),
        ]
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
@pytest.mark.parametrize("legacy", LEGACY_ARRAYS)
def test_legacy_arrays_are_declared_so_the_api_server_keeps_them(kind: str, legacy: str) -> None:
    """An undeclared field is pruned on every read and write: Herald 0.2 could not migrate it."""
    sub = node(SCHEMAS[kind], f"status.{legacy}")
    assert sub["description"].startswith(
        f"{legacy} is Herald 0.1 only: migrated into Delivery objects at startup, then cleared."
    )
    assert sub["items"]["type"] == "object"
    assert sub["items"]["x-kubernetes-preserve-unknown-fields"] is True
    assert not {"properties", "required"} & set(sub["items"])


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
            ("status.conditions[]", Condition),
            ("status.pause", Pause),
        ]
    ),
    ("Delivery", "status.attemptLog[]", Attempt, set(), True),
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


# The Delivery contract (issue 12): (kind, schema path, its properties, its required ones).
_SUMMARY = {
    "observedGeneration", "conditions", "counters", "lastDelivery", "pendingDeliveries",
    "oldestPendingAt", "consecutiveFailures", "failingSince", "pause", "handledPing",
    "handledRedeliver", "handledEnable",
}  # fmt: skip
CONTRACT = [
    *(
        (kind, path, properties, required)
        for kind in ("Webhook", "ClusterWebhook")
        for path, properties, required in [
            ("status", _SUMMARY | set(LEGACY_ARRAYS), set()),
            ("status.counters", {"delivered", "failed", "retried", "deferred"}, set()),
            (
                "status.lastDelivery",
                {
                    "name",
                    "payloadId",
                    "event",
                    "environment",
                    "outcome",
                    "attempts",
                    "httpStatus",
                    "error",
                    "time",
                },
                # What Herald 0.1's lastDelivery holds too, so its status stays valid until migrated.
                {"payloadId", "event", "environment", "time"},
            ),
        ]
    ),
    (
        "Delivery",
        "spec",
        {"webhook", "environment", "deploymentId", "event", "payloadId", "createdAt", "notification"},
        {"webhook", "environment", "deploymentId", "event", "payloadId", "createdAt", "notification"},
    ),
    ("Delivery", "spec.webhook", {"kind", "name", "namespace"}, {"kind", "name"}),
    ("Delivery", "spec.environment", {"namespace", "name", "uid"}, {"namespace", "name"}),
    (
        "Delivery",
        "status",
        {"outcome", "attempts", "httpStatus", "error", "durationMs", "attemptLog", *DELIVERY_TIMES},
        set(),
    ),
]


@pytest.mark.parametrize(("kind", "path", "properties", "required"), CONTRACT)
def test_fields_are_the_contracts(kind: str, path: str, properties: set[str], required: set[str]) -> None:
    sub = node(SCHEMAS[kind], path)
    assert set(sub["properties"]) == properties
    assert set(sub.get("required", ())) == required


def test_notifications_keep_every_field() -> None:
    """A Delivery keeps the notification it sends whole: a restarted Herald sends the same body."""
    assert node(SCHEMAS["Delivery"], "spec.notification") == {
        "description": node(SCHEMAS["Delivery"], "spec.notification")["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


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


# ---------------------------------------------------------------- what Herald writes is accepted

AT = "2026-01-01T12:00:00.123456Z"  # RFC 3339, as Herald writes times
LATER = "2026-01-01T12:00:05Z"
PAYLOAD_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def delivery(
    kind: str = "Webhook", webhook: str = "shop-deployments", namespace: str = "demo"
) -> dict[str, Any]:
    """A Delivery with every field set, written from the contract (not from Herald's output)."""
    hook_ns = namespace if kind == "Webhook" else None
    digest = hashlib.sha256(f"{kind}/{hook_ns or ''}/{webhook}/{PAYLOAD_ID}".encode()).hexdigest()[:12]
    attempts = [
        {
            "number": 1,
            "time": AT,
            "httpStatus": 503,
            "error": "HTTP 503 Service Unavailable",
            "durationMs": 41,
        },
        {"number": 2, "time": LATER, "error": "timed out after 10 s", "durationMs": 10000},
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Delivery",
        "metadata": {
            "name": f"{webhook[:40].rstrip('-.')}-{digest}",
            "namespace": hook_ns or "herald-system",
            "labels": {
                "app.kubernetes.io/managed-by": "herald",
                "herald.dev/webhook": webhook,
                "herald.dev/webhook-kind": kind,
                "herald.dev/environment": "production",
                "herald.dev/environment-namespace": "shop",
                "herald.dev/event": "DEPLOYMENT_FAILURE",
                "herald.dev/outcome": "Retrying",
            },
            "annotations": {"herald.dev/redeliver": "2", "herald.dev/redelivered": "1"},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": kind,
                    "name": webhook,
                    "uid": "5c0ffee0-0000-4000-8000-000000000001",
                }
            ],
        },
        "spec": {
            "webhook": {"kind": kind, "name": webhook, **({"namespace": hook_ns} if hook_ns else {})},
            "environment": {
                "namespace": "shop",
                "name": "production",
                "uid": "5c0ffee0-0000-4000-8000-000000000002",
            },
            "deploymentId": "deploy-43",
            "event": "DEPLOYMENT_FAILURE",
            "payloadId": PAYLOAD_ID,
            "createdAt": AT,
            "notification": {
                "eventType": "DEPLOYMENT_FAILURE",
                "payloadId": PAYLOAD_ID,
                "createdAt": AT,
                "environment": {"uid": "u1", "name": "production", "namespace": "shop", "type": "PRODUCTION"},
                "project": {"id": "p1", "name": "shop-frontend"},
                "deployment": {"id": "deploy-43", "currentStatus": "DEPLOYMENT_ERROR", "logs": ["boom"]},
                "applications": [{"name": "storefront", "commitId": "3f9a2c1", "anyField": {"kept": True}}],
            },
        },
        "status": {
            "outcome": "Retrying",
            "attempts": 2,
            "httpStatus": 503,
            "error": "timed out after 10 s",
            "durationMs": 10000,
            "lastAttemptAt": LATER,
            "nextAttemptAt": "2026-01-01T12:01:05Z",
            "finishedAt": LATER,
            "attemptLog": attempts,
        },
    }


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_a_full_delivery_is_accepted_and_kept_whole(kind: str) -> None:
    obj = delivery(kind)
    assert set(obj["status"]) == set(node(SCHEMAS["Delivery"], "status")["properties"]), "every field set"
    assert rejections("Delivery", obj) == []


# (case, merge patch on a full Delivery, path the API server names)
INVALID_DELIVERIES = [
    ("no payloadId", {"spec": {"payloadId": None}}, "spec"),
    ("payloadId too long", {"spec": {"payloadId": "f" * 65}}, "spec.payloadId"),
    ("no notification", {"spec": {"notification": None}}, "spec"),
    ("no webhook name", {"spec": {"webhook": {"name": None}}}, "spec.webhook"),
    ("unknown webhook kind", {"spec": {"webhook": {"kind": "Hook"}}}, "spec.webhook.kind"),
    ("Webhook without namespace", {"spec": {"webhook": {"namespace": None}}}, "spec.webhook"),
    ("ClusterWebhook with namespace", {"spec": {"webhook": {"kind": "ClusterWebhook"}}}, "spec.webhook"),
    ("environment without namespace", {"spec": {"environment": {"namespace": None}}}, "spec.environment"),
    ("unknown event", {"spec": {"event": "DEPLOYMENT_EXPLODED"}}, "spec.event"),
    ("createdAt not a time", {"spec": {"createdAt": "yesterday"}}, "spec.createdAt"),
    ("outcome Done", {"status": {"outcome": "Done"}}, "status.outcome"),
    ("negative attempts", {"status": {"attempts": -1}}, "status.attempts"),
    ("error too long", {"status": {"error": "e" * 1025}}, "status.error"),
    (
        "eleven attempts logged",
        {"status": {"attemptLog": [{"number": n, "time": AT, "durationMs": 1} for n in range(1, 12)]}},
        "status.attemptLog",
    ),
    (
        "attempt without time",
        {"status": {"attemptLog": [{"number": 1, "durationMs": 1}]}},
        "status.attemptLog[0]",
    ),
]


@pytest.mark.parametrize(
    ("case", "patch", "where"), INVALID_DELIVERIES, ids=[c[0] for c in INVALID_DELIVERIES]
)
def test_invalid_delivery_is_refused(case: str, patch: dict[str, Any], where: str) -> None:
    errors = rejections("Delivery", merge_patch(delivery(), patch))
    assert any(e.startswith(f"{where}: ") for e in errors), f"{case}: {errors}"


def summary_status() -> dict[str, Any]:
    """A webhook's summary status with every field set, written from the contract."""
    return {
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "EndpointDisabled",
                "message": "every attempt failed since 2026-01-01T12:00:00Z",
                "lastTransitionTime": LATER,
                "observedGeneration": 2,
            }
        ],
        "counters": {"delivered": 3, "failed": 1, "retried": 2, "deferred": 7},
        "lastDelivery": {
            "name": delivery()["metadata"]["name"],
            "payloadId": PAYLOAD_ID,
            "event": "DEPLOYMENT_FAILURE",
            "environment": "shop/production",
            "outcome": "Retrying",
            "attempts": 2,
            "httpStatus": 503,
            "error": "HTTP 503 Service Unavailable",
            "time": LATER,
        },
        "pendingDeliveries": 4999,
        "oldestPendingAt": AT,
        "consecutiveFailures": 2,
        "failingSince": AT,
        "pause": {"reason": "EndpointDisabled", "generation": 2, "policy": "abc123"},
        "handledPing": "1",
        "handledRedeliver": "failed",
        "handledEnable": "1",
    }


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_summary_status_is_accepted_and_kept_whole(kind: str) -> None:
    status = summary_status()
    assert set(status) == _SUMMARY, "every summary field set"
    obj = merge_patch(example(*(STANDARD if kind == "Webhook" else CLUSTER)), {"status": status})
    assert rejections(kind, obj) == []


def legacy_status() -> dict[str, Any]:
    """A status as Herald 0.1 wrote it: its queue, history and notifications on the webhook."""
    record = {
        "payloadId": PAYLOAD_ID,
        "event": "DEPLOYMENT_FAILURE",
        "environment": "shop/production",
        "deploymentId": "deploy-43",
        "attempts": 1,
        "httpStatus": 503,
        "error": "HTTP 503",
        "time": AT,
        "outcome": "Retrying",
        "durationMs": 12,
        "nextAttemptAt": LATER,
        "attemptLog": [{"number": 1, "time": AT, "httpStatus": 503, "error": "HTTP 503", "durationMs": 12}],
    }
    notification = delivery()["spec"]["notification"]
    return {
        "observedGeneration": 1,
        "lastDelivery": record,
        "deliveries": [record, {**record, "payloadId": "aa" * 16, "outcome": "Failed", "attempts": 6}],
        "pending": [{"record": record, "notification": notification}],
        "sent": [notification],
        "counters": {"delivered": 3, "failed": 1, "retried": 2, "dropped": 4},
        "consecutiveFailures": 1,
    }


@pytest.mark.parametrize("kind", ["Webhook", "ClusterWebhook"])
def test_a_herald_01_status_stays_valid_and_its_arrays_are_kept(kind: str) -> None:
    """Herald 0.2 must read 0.1's arrays (so the server must keep them) and still write the status
    (so 0.1's values must pass the new schema); only fields no longer in the summary are pruned."""
    obj = merge_patch(example(*(STANDARD if kind == "Webhook" else CLUSTER)), {"status": legacy_status()})
    schema = SCHEMAS[kind]
    assert list(KubeValidator(schema, format_checker=FORMATS).iter_errors(obj)) == []
    pruned = {error.partition(":")[0] for error in unknown_fields(schema, obj)}
    assert pruned == {
        "status.counters.dropped",
        *(
            f"status.lastDelivery.{field}"
            for field in ("deploymentId", "durationMs", "nextAttemptAt", "attemptLog")
        ),
    }


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
