"""What every format returns, and the one error a format may raise: shared by the format modules."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RenderError", "Rendered"]


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """One request's payload: the body, its content type, and headers the format adds."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


class RenderError(ValueError):
    """The webhook's own settings (a CUSTOM template) fail on this event; ``str()`` names the line
    and the reason, never a value. Formats of the fixed kinds never raise it."""
