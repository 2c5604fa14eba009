"""Keeping credentials out of everything a person can read: status, logs, Events.

A Slack incoming-webhook URL is a credential in its path, and any error text may echo a
header or a URL, so URLs are shown as scheme and host only and every error message is
scrubbed of the secrets of the delivery it describes before it goes anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["INVALID_URL", "MASK", "MAX_MESSAGE_LENGTH", "redact_url", "scrub"]

INVALID_URL = "<invalid url>"
MASK = "***"
# Long enough for an actionable message, short enough for a status field and to cut any
# secret-bearing tail a library might have appended.
MAX_MESSAGE_LENGTH = 300


def redact_url(url: str) -> str:
    """``scheme://host[:port]``: what a person needs to know where deliveries go, and no more."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port  # raises ValueError on a garbled port
    except ValueError:
        return INVALID_URL
    if not parts.scheme or not host:
        return INVALID_URL
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and the credential-bearing parts of secret URLs, masked.

    Masking happens before the cut, so a secret straddling the limit cannot leave a prefix.
    """
    for fragment in sorted(_fragments(secrets), key=len, reverse=True):
        text = text.replace(fragment, MASK)
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


def _fragments(secrets: Iterable[str]) -> set[str]:
    """Each secret, plus its URL path, query and user info when it is a URL."""
    found: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        found.add(secret)
        try:
            parts = urlsplit(secret)
        except ValueError:
            continue
        if not parts.scheme or not parts.netloc:
            continue
        userinfo, _, _ = parts.netloc.rpartition("@")
        for fragment in (parts.path if parts.path != "/" else "", parts.query, userinfo):
            if fragment:
                found.add(fragment)
    return found
