"""herald.egress: which addresses and schemes a delivery may go to."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.egress import Address, denial_reason, scheme_error
from herald.settings import Settings

DEFAULT = Settings()
DENY_PRIVATE = Settings(egress_deny_private=True)
ALLOW_LOOPBACK = Settings(egress_allow=(ipaddress.ip_network("127.0.0.0/8"),))
ALLOW_METADATA = Settings(
    egress_allow=(ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fe80::/10")),
    egress_deny_private=True,
)


@pytest.mark.parametrize(
    ("address", "settings", "category"),
    [
        pytest.param("127.0.0.1", DEFAULT, "a loopback address", id="loopback"),
        pytest.param("127.8.9.10", DEFAULT, "a loopback address", id="loopback-range"),
        pytest.param("::1", DEFAULT, "a loopback address", id="loopback-v6"),
        pytest.param("169.254.169.254", DEFAULT, "a cloud metadata address", id="metadata"),
        pytest.param("169.254.1.1", DEFAULT, "a link-local address", id="link-local"),
        pytest.param("fe80::1", DEFAULT, "a link-local address", id="link-local-v6"),
        pytest.param("fd00:ec2::254", DEFAULT, "a cloud metadata address", id="metadata-aws-v6"),
        pytest.param("100.100.100.200", DEFAULT, "a cloud metadata address", id="metadata-alibaba"),
        pytest.param("0.0.0.0", DEFAULT, "an unspecified address", id="unspecified"),
        pytest.param("::", DEFAULT, "an unspecified address", id="unspecified-v6"),
        pytest.param("224.0.0.1", DEFAULT, "a multicast address", id="multicast"),
        pytest.param("ff02::1", DEFAULT, "a multicast address", id="multicast-v6"),
        pytest.param("240.0.0.1", DEFAULT, "a reserved address", id="reserved"),
        pytest.param("255.255.255.255", DEFAULT, "a reserved address", id="broadcast"),
        pytest.param("100.64.0.1", DEFAULT, "a shared (CGNAT) address", id="cgnat"),
        pytest.param("100.127.255.254", DEFAULT, "a shared (CGNAT) address", id="cgnat-top"),
        pytest.param("192.0.2.1", DEFAULT, "a special-purpose address", id="documentation"),
        pytest.param("10.0.0.1", DENY_PRIVATE, "a private address", id="private-denied"),
        pytest.param("172.16.5.4", DENY_PRIVATE, "a private address", id="private-172-denied"),
        pytest.param("192.168.1.1", DENY_PRIVATE, "a private address", id="private-192-denied"),
        pytest.param("fd12:3456::1", DENY_PRIVATE, "a private address", id="private-ula-denied"),
    ],
)
def test_denied(address: str, settings: Settings, category: str) -> None:
    ip = ipaddress.ip_address(address)
    reason = denial_reason(ip, settings)
    assert reason is not None
    assert reason.startswith(f"{ip} is {category}")


@pytest.mark.parametrize(
    ("address", "embedded", "category"),
    [
        pytest.param("::ffff:127.0.0.1", "127.0.0.1", "a loopback address", id="mapped-loopback"),
        pytest.param(
            "::ffff:169.254.169.254", "169.254.169.254", "a cloud metadata address", id="mapped-metadata"
        ),
        pytest.param("::ffff:0.0.0.0", "0.0.0.0", "an unspecified address", id="mapped-unspecified"),
        pytest.param("2002:7f00:1::1", "127.0.0.1", "a loopback address", id="6to4-loopback"),
        pytest.param("2002:a9fe:a9fe::", "169.254.169.254", "a cloud metadata address", id="6to4-metadata"),
        pytest.param("64:ff9b::7f00:1", "127.0.0.1", "a loopback address", id="nat64-loopback"),
    ],
)
def test_embedded_ipv4_is_judged_as_ipv4(address: str, embedded: str, category: str) -> None:
    ip = ipaddress.ip_address(address)
    assert denial_reason(ip, DEFAULT) == f"{ip} is {category} ({embedded} embedded)"


@pytest.mark.parametrize(
    ("address", "settings"),
    [
        pytest.param("8.8.8.8", DEFAULT, id="public"),
        pytest.param("8.8.8.8", DENY_PRIVATE, id="public-deny-private"),
        pytest.param("2606:4700:4700::1111", DEFAULT, id="public-v6"),
        pytest.param("::ffff:8.8.8.8", DEFAULT, id="mapped-public"),
        pytest.param("64:ff9b::808:808", DEFAULT, id="nat64-public"),
        pytest.param("10.0.0.1", DEFAULT, id="private-allowed"),
        pytest.param("172.31.255.1", DEFAULT, id="private-172-allowed"),
        pytest.param("192.168.0.10", DEFAULT, id="private-192-allowed"),
        pytest.param("fd12:3456::1", DEFAULT, id="private-ula-allowed"),
        pytest.param("127.0.0.1", ALLOW_LOOPBACK, id="allow-list-overrides-loopback"),
        pytest.param("::ffff:127.0.0.1", ALLOW_LOOPBACK, id="allow-list-covers-mapped"),
        pytest.param("169.254.169.254", ALLOW_METADATA, id="allow-list-overrides-metadata"),
        pytest.param("fe80::1", ALLOW_METADATA, id="allow-list-v6"),
    ],
)
def test_allowed(address: str, settings: Settings) -> None:
    assert denial_reason(ipaddress.ip_address(address), settings) is None


def test_allow_list_is_exact() -> None:
    assert denial_reason(ipaddress.ip_address("::1"), ALLOW_LOOPBACK) is not None
    assert denial_reason(ipaddress.ip_address("10.0.0.1"), ALLOW_METADATA) is not None


@given(st.ip_addresses())
def test_properties_of_any_address(address: Address) -> None:
    reason = denial_reason(address, DEFAULT)
    if address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast:
        assert reason is not None
    if reason is not None:
        assert reason.startswith(f"{address} is ")
    if denial_reason(address, DENY_PRIVATE) is None:  # denying private never allows more
        assert reason is None


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_form_gets_the_same_verdict(address: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    for settings in (DEFAULT, DENY_PRIVATE, ALLOW_LOOPBACK):
        assert (denial_reason(mapped, settings) is None) == (denial_reason(address, settings) is None)


@given(st.ip_addresses())
def test_allow_all_overrides_everything(address: Address) -> None:
    everything = Settings(
        egress_allow=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
        egress_deny_private=True,
    )
    assert denial_reason(address, everything) is None


@pytest.mark.parametrize(
    ("url", "settings", "refused"),
    [
        pytest.param("https://example.com/x", DEFAULT, False, id="https"),
        pytest.param("http://example.com/x", DEFAULT, False, id="http"),
        pytest.param("HTTP://example.com/x", DEFAULT, False, id="scheme-case"),
        pytest.param(
            "http://example.com/x", Settings(require_https=True), True, id="http-when-https-required"
        ),
        pytest.param("https://example.com/x", Settings(require_https=True), False, id="https-when-required"),
        pytest.param("ftp://example.com/x", DEFAULT, True, id="ftp"),
        pytest.param("file:///etc/passwd", DEFAULT, True, id="file"),
        pytest.param("gopher://x", DEFAULT, True, id="gopher"),
        pytest.param("hooks.slack.com/services/T0/B0/SECRET", DEFAULT, True, id="no-scheme"),
        pytest.param("", DEFAULT, True, id="empty"),
    ],
)
def test_scheme_error(url: str, settings: Settings, refused: bool) -> None:
    error = scheme_error(url, settings)
    assert (error is not None) is refused
    if error is not None:
        assert "SECRET" not in error
        assert url not in error or not url
