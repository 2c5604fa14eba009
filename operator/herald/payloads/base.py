"""What every format returns, and the one error a format may raise: shared by the format modules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SERVICE_TITLES", "RenderError", "Rendered", "joined"]

# The Environment's service lists and their headings, in the order the chat formats show them.
SERVICE_TITLES = (
    ("applications", "Applications"),
    ("databases", "Databases"),
    ("containers", "Containers"),
    ("jobs", "Jobs"),
)


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """One request's payload: the body, its content type, and headers the format adds."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


class RenderError(ValueError):
    """The webhook's own settings (a CUSTOM template) fail on this event; ``str()`` names the line
    and the reason, never a value. Formats of the fixed kinds never raise it."""


def joined(names: Sequence[str], limit: int) -> str:
    """Names, comma-separated, ending with ", and N more" where they stop fitting in ``limit``."""
    used = 0
    for index, name in enumerate(names):
        rest = len(names) - index - 1
        used += len(name) + (2 if index else 0)
        if used + (len(f", and {rest} more") if rest else 0) > limit:
            return ", ".join(names[:index]) + f", and {rest + 1} more"
    return ", ".join(names)
