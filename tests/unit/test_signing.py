"""herald.signing: Standard Webhooks keys and headers."""

from __future__ import annotations

import base64
import datetime
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald.signing import signature_headers, signing_key_error

# The specification's published test vector.
SPEC_KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = datetime.datetime.fromtimestamp(1614265330, tz=datetime.UTC)
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def key_of(size: int, fill: bytes = b"k") -> str:
    return "whsec_" + base64.b64encode(fill * size).decode()


CURRENT = key_of(32, b"c")
PREVIOUS = key_of(32, b"p")


def test_spec_test_vector() -> None:
    headers = signature_headers(msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY, keys=[SPEC_KEY])
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_timestamp_in_another_zone_is_the_same_instant() -> None:
    paris = SPEC_TIMESTAMP.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
    headers = signature_headers(msg_id=SPEC_ID, timestamp=paris, body=SPEC_BODY, keys=[SPEC_KEY])
    assert headers["webhook-timestamp"] == "1614265330"
    assert headers["webhook-signature"] == SPEC_SIGNATURE


def test_rotation_sends_both_signatures_and_either_key_verifies() -> None:
    now = datetime.datetime.now(datetime.UTC)
    body = b'{"event_type": "DEPLOYMENT_SUCCESSFUL"}'
    headers = signature_headers(msg_id="p-1", timestamp=now, body=body, keys=[CURRENT, PREVIOUS])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for key in (CURRENT, PREVIOUS):
        assert Webhook(key).verify(body, headers) == {"event_type": "DEPLOYMENT_SUCCESSFUL"}
    with pytest.raises(WebhookVerificationError):
        Webhook(key_of(32, b"x")).verify(body, headers)


def test_signature_covers_the_exact_bytes() -> None:
    now = datetime.datetime.now(datetime.UTC)
    headers = signature_headers(msg_id="p-1", timestamp=now, body=b'{"a": 1}', keys=[CURRENT])
    with pytest.raises(WebhookVerificationError):
        Webhook(CURRENT).verify(b'{"a":1}', headers)


@given(
    body=st.text().map(str.encode),
    msg_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    key_bytes=st.binary(min_size=24, max_size=64),
)
def test_round_trip_with_the_library(body: bytes, msg_id: str, key_bytes: bytes) -> None:
    key = "whsec_" + base64.b64encode(key_bytes).decode()
    headers = signature_headers(
        msg_id=msg_id, timestamp=datetime.datetime.now(datetime.UTC), body=body, keys=[key]
    )
    Webhook(key).verify(body, headers, json_parse=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"keys": []}, "at least one", id="no-key"),
        pytest.param({"keys": ["nope"]}, "whsec_", id="bad-key"),
        pytest.param({"timestamp": datetime.datetime(2026, 1, 1)}, "timezone-aware", id="naive-time"),
        pytest.param({"body": b"\xff\xfe"}, "utf-8", id="not-utf8"),
    ],
)
def test_signature_headers_refuses(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"msg_id": "p", "timestamp": SPEC_TIMESTAMP, "body": b"{}", "keys": [CURRENT]}
    args |= kwargs
    with pytest.raises(ValueError, match=message):
        signature_headers(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(SPEC_KEY, None, id="spec-key"),
        pytest.param(key_of(24), None, id="24-bytes"),
        pytest.param(key_of(64), None, id="64-bytes"),
        pytest.param(key_of(32) + "\n", None, id="trailing-newline-forgiven"),
        pytest.param(key_of(32).rstrip("="), None, id="unpadded"),
        pytest.param(key_of(23), "24 to 64 bytes, this one holds 23", id="too-short"),
        pytest.param(key_of(65), "24 to 64 bytes, this one holds 65", id="too-long"),
        pytest.param(key_of(32).removeprefix("whsec_"), "must start with whsec_", id="no-prefix"),
        pytest.param("whsec_not*base64!", "standard base64", id="not-base64"),
        pytest.param(
            "whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "standard base64", id="urlsafe"
        ),
        pytest.param("", "must start with whsec_", id="empty"),
    ],
)
def test_signing_key_error(value: str, problem: str | None) -> None:
    error = signing_key_error(value)
    if problem is None:
        assert error is None
    else:
        assert error is not None
        assert problem in error


@given(st.text())
def test_signing_key_error_never_echoes_the_value(value: str) -> None:
    error = signing_key_error("whsec_" + value)
    # Every message is fixed text plus at most byte counts, so no part of the key can be in it.
    fixed = {
        "a signing key must start with whsec_",
        "a signing key must be whsec_ followed by standard base64",
    }
    assert (
        error is None
        or error in fixed
        or re.fullmatch(r"a signing key must hold \d+ to \d+ bytes, this one holds \d+", error)
    )
