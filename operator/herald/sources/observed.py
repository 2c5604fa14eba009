"""What a source saw of one deployment, before Herald settles it into ``status.deployment``.

Each source module reduces its objects to an ``Observed``; the package turns that into the
status Herald writes (timestamps carried over, a superseded deployment closed, the marker set).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from herald.models import DeploymentState

__all__ = ["MAX_MESSAGE", "Observed", "condition", "short_hash"]

MAX_MESSAGE = 1024  # characters of a source's message kept in status.deployment.message


class Observed(BaseModel):
    """One deployment as its source shows it; times are RFC 3339 strings when the source has them."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: DeploymentState
    message: str
    started_at: str | None = None
    finished_at: str | None = None
    applications: tuple[dict[str, Any], ...] = ()


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The standard condition of that type in an object's status, if it has one."""
    for item in status.get("conditions") or ():
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return None


def short_hash(*parts: str) -> str:
    """A stable, short digest of what identifies a deployment (ids must fit 253 characters)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
