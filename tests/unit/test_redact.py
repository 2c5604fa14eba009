"""herald.redact: URLs shown as scheme and host, secrets masked in every message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.redact import INVALID_URL, MASK, MAX_MESSAGE_LENGTH, redact_url, scrub

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(SLACK, "https://hooks.slack.com", id="slack-path-dropped"),
        pytest.param(
            "http://receiver.team-a:8080/hook?token=abc", "http://receiver.team-a:8080", id="port-kept"
        ),
        pytest.param("https://user:pass@example.com/x", "https://example.com", id="userinfo-dropped"),
        pytest.param("HTTPS://Example.COM/x#frag", "https://example.com", id="lowercased"),
        pytest.param("http://[::1]:9000/x", "http://[::1]:9000", id="ipv6-bracketed"),
        pytest.param("http://10.0.0.1", "http://10.0.0.1", id="no-path"),
        pytest.param("not a url", INVALID_URL, id="no-scheme"),
        pytest.param("https://", INVALID_URL, id="no-host"),
        pytest.param("http://host:99999/x", INVALID_URL, id="bad-port"),
        pytest.param("http://host:abc/x", INVALID_URL, id="garbled-port"),
        pytest.param("http://[::1/x", INVALID_URL, id="unclosed-bracket"),
        pytest.param("", INVALID_URL, id="empty"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@given(st.text())
def test_redact_url_never_raises_and_never_keeps_a_path(url: str) -> None:
    shown = redact_url(url)
    assert shown == INVALID_URL or "/" not in shown.split("://", 1)[1]


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param("bad header s3cr3t here", ["s3cr3t"], f"bad header {MASK} here", id="plain-secret"),
        pytest.param("s3cr3t and s3cr3t", ["s3cr3t"], f"{MASK} and {MASK}", id="every-occurrence"),
        pytest.param(f"POST {SLACK} failed", [SLACK], f"POST {MASK} failed", id="whole-url"),
        pytest.param(
            "404 for /services/T000/B000/XXXXXXXXXXXXXXXX",
            [SLACK],
            f"404 for {MASK}",
            id="url-path-alone",
        ),
        pytest.param(
            "GET http://h/hook?token=abc", ["http://h/hook?token=abc"], f"GET {MASK}", id="query-too"
        ),
        pytest.param("token=abc seen", ["http://h/x?token=abc"], f"{MASK} seen", id="query-alone"),
        pytest.param("login bob:pw failed", ["http://bob:pw@h/"], f"login {MASK} failed", id="userinfo"),
        pytest.param("GET / HTTP/1.1", ["http://h/"], "GET / HTTP/1.1", id="root-path-is-no-secret"),
        pytest.param("abcdef", ["abc", "abcdef"], MASK, id="longest-first"),
        pytest.param("nothing here", ["", "zzz"], "nothing here", id="empty-secret-ignored"),
    ],
)
def test_scrub(text: str, secrets: list[str], expected: str) -> None:
    assert scrub(text, secrets) == expected


def test_scrub_masks_before_cutting_so_no_prefix_survives() -> None:
    secret = "S" * 40
    text = "x" * (MAX_MESSAGE_LENGTH - 10) + secret
    scrubbed = scrub(text, [secret])
    assert "S" not in scrubbed
    assert len(scrubbed) <= MAX_MESSAGE_LENGTH


def test_scrub_cuts_long_text() -> None:
    scrubbed = scrub("y" * 1000, [])
    assert len(scrubbed) == MAX_MESSAGE_LENGTH
    assert scrubbed.endswith("…")


@given(
    prefix=st.text(max_size=400),
    secret=st.text(min_size=1, max_size=60),
    suffix=st.text(max_size=400),
)
def test_scrub_never_leaks_a_secret(prefix: str, secret: str, suffix: str) -> None:
    scrubbed = scrub(prefix + secret + suffix, [secret])
    assert len(scrubbed) <= MAX_MESSAGE_LENGTH
    # A secret sharing a character with the mask or the ellipsis could re-form across one.
    if not set(secret) & set(MASK + "…"):
        assert secret not in scrubbed
