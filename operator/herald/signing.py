"""Standard Webhooks signatures, so a receiver can prove a delivery is genuine and fresh.

Qovery's own header (``Qovery-Secret``) sends the secret itself; a signature over
``id.timestamp.body`` proves the body and its age without ever sending the key. The HMAC is
the ``standardwebhooks`` library's, the one receivers verify with, never a copy of it.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Sequence

from standardwebhooks.webhooks import Webhook

__all__ = ["KEY_PREFIX", "MAX_KEY_BYTES", "MIN_KEY_BYTES", "signature_headers", "signing_key_error"]

KEY_PREFIX = "whsec_"
# The specification's bounds: at least 24 random bytes, at most 64.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def signing_key_error(value: str) -> str | None:
    """What is wrong with a signing key, or None. The key itself is never echoed.

    Surrounding whitespace (a newline left by ``echo`` into a Secret) is forgiven.
    """
    value = value.strip()
    if not value.startswith(KEY_PREFIX):
        return f"a signing key must start with {KEY_PREFIX}"
    encoded = value.removeprefix(KEY_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return f"a signing key must be {KEY_PREFIX} followed by standard base64"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"a signing key must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, this one holds {len(key)}"
    return None


def signature_headers(
    *, msg_id: str, timestamp: datetime.datetime, body: bytes, keys: Sequence[str]
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for exactly ``body``.

    Several keys (during a rotation: current, then previous) give space-separated signatures, so
    a receiver holding either key verifies. Raises ValueError for a bad key, a naive timestamp or
    a body that is not UTF-8 (the specification signs text).
    """
    if not keys:
        raise ValueError("at least one signing key is needed")
    for key in keys:
        error = signing_key_error(key)
        if error is not None:
            raise ValueError(error)
    if timestamp.tzinfo is None:
        raise ValueError("the timestamp must be timezone-aware")
    seconds = int(timestamp.timestamp())
    # The library reads the datetime's fields as UTC, so hand it UTC: header and HMAC then agree.
    signed_at = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    text = body.decode("utf-8")
    signatures = [Webhook(key.strip()).sign(msg_id=msg_id, timestamp=signed_at, data=text) for key in keys]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(signatures),
    }
