"""Which webhooks a deployment event goes to: enabled, events, environment types, project globs.

Separate from sending, as in Flux's notification-controller. Namespace scoping and a
ClusterWebhook's ``namespaceSelector`` need the namespace's labels, which the caller looks up;
``selector_matches`` judges them here.

Globs are matched piecewise rather than as one ``.*``-laden regex: a pattern written by a
tenant (``*a*a*a*a*b``) must not be able to stall the operator with catastrophic backtracking.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from herald.models import DeploymentEvent, LabelSelector, LabelSelectorRequirement, WebhookSpec

__all__ = ["glob_match", "matches", "selector_matches"]


@dataclass(frozen=True)
class _Glob:
    """A pattern split at its stars; each piece matches a fixed number of characters."""

    head: re.Pattern[str]
    head_len: int
    middle: tuple[re.Pattern[str], ...]
    tail: re.Pattern[str] | None  # None: no star, the head must be the whole name
    tail_len: int


def _piece(text: str) -> re.Pattern[str]:
    return re.compile(
        "".join("." if char == "?" else re.escape(char) for char in text), re.IGNORECASE | re.DOTALL
    )


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> _Glob:
    head, *rest = pattern.split("*")
    if not rest:
        return _Glob(head=_piece(head), head_len=len(head), middle=(), tail=None, tail_len=0)
    *middle, tail = rest
    return _Glob(
        head=_piece(head),
        head_len=len(head),
        middle=tuple(_piece(piece) for piece in middle if piece),
        tail=_piece(tail),
        tail_len=len(tail),
    )


def glob_match(pattern: str, name: str) -> bool:
    """Whole-name, case-insensitive match: ``*`` any run, ``?`` one character, the rest literal.

    Every piece between stars matches a fixed number of characters, so taking each middle piece
    at its leftmost place is exact and runs in time linear in the pattern times the name.
    """
    glob = _compile(pattern)
    if glob.tail is None:
        return glob.head.fullmatch(name) is not None
    end = len(name) - glob.tail_len
    if end < glob.head_len:
        return False
    if glob.head.match(name, 0, glob.head_len) is None or glob.tail.fullmatch(name, end) is None:
        return False
    position = glob.head_len
    for piece in glob.middle:
        found = piece.search(name, position, end)
        if found is None:
            return False
        position = found.end()
    return True


def _requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    match requirement.operator:
        case "In":
            return present and labels[requirement.key] in requirement.values
        case "NotIn":
            return not present or labels[requirement.key] not in requirement.values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics; no selector, or an empty one, selects everything."""
    if selector is None:
        return True
    return all(labels.get(key) == value for key, value in selector.match_labels.items()) and all(
        _requirement_matches(requirement, labels) for requirement in selector.match_expressions
    )


def matches(spec: WebhookSpec, event: DeploymentEvent) -> bool:
    """Whether the webhook wants this event: AND between the filters, OR within each; empty = all."""
    return (
        spec.enabled
        and event.event_type in spec.events
        and (not spec.environment_types_filter or event.environment.type in spec.environment_types_filter)
        and (
            not spec.project_names_filter
            or any(glob_match(pattern, event.project.name) for pattern in spec.project_names_filter)
        )
    )
