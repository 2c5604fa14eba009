"""Egress policy: which addresses and schemes Herald may send a delivery to.

Tenants choose webhook URLs, so without a policy Herald would be a way into the cluster's
own network and the cloud metadata endpoint (SSRF). The policy is judged on an IP address,
by ``delivery`` on the address it actually connects to, so DNS rebinding cannot slip past.

Denied: cloud metadata, unspecified, loopback, link-local, multicast, shared (CGNAT) and
reserved addresses, and anything else not globally routable. IPv6 forms that embed an IPv4
address (IPv4-mapped, 6to4, NAT64) are judged by the IPv4 address they carry. Private ranges
stay allowed (in-cluster receivers live there) unless ``egress_deny_private``; the CIDRs in
``egress_allow`` override every denial.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from herald.settings import Network, Settings

__all__ = ["Address", "denial_reason", "scheme_error"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_net = ipaddress.ip_network

# Metadata services reachable from a pod: AWS/GCP/Azure/OpenStack (link-local anyway), AWS over
# IPv6 (inside fc00::/7, so allowed as private unless named here), Alibaba (inside CGNAT).
_METADATA = (_net("169.254.169.254/32"), _net("fd00:ec2::254/128"), _net("100.100.100.200/32"))
_CGNAT = (_net("100.64.0.0/10"),)
_PRIVATE = (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"), _net("fc00::/7"))
_NAT64 = _net("64:ff9b::/96")

# First match names the category; private ranges are judged after these, the rest last.
_CATEGORIES: tuple[tuple[Callable[[Address], bool], str], ...] = (
    (lambda a: _within(a, _METADATA), "a cloud metadata address"),
    (lambda a: a.is_unspecified, "an unspecified address"),
    (lambda a: a.is_loopback, "a loopback address"),
    (lambda a: a.is_link_local, "a link-local address"),
    (lambda a: a.is_multicast, "a multicast address"),
    (lambda a: _within(a, _CGNAT), "a shared (CGNAT) address"),
    (lambda a: a.is_reserved, "a reserved address"),
)


def denial_reason(address: Address, settings: Settings) -> str | None:
    """Why Herald must not connect to ``address``, or None when it may."""
    embedded = _embedded_ipv4(address)
    if _within(address, settings.egress_allow) or (
        embedded is not None and _within(embedded, settings.egress_allow)
    ):
        return None
    judged = embedded if embedded is not None else address
    suffix = f" ({embedded} embedded)" if embedded is not None else ""
    for applies, category in _CATEGORIES:
        if applies(judged):
            return f"{address} is {category}{suffix}"
    if _within(judged, _PRIVATE):
        return f"{address} is a private address{suffix}" if settings.egress_deny_private else None
    if not judged.is_global:
        return f"{address} is a special-purpose address, not globally routable{suffix}"
    return None


def scheme_error(url: str, settings: Settings) -> str | None:
    """Why ``url``'s scheme is refused, or None. The URL itself is never echoed: it may be a secret."""
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        return "only http:// and https:// URLs are allowed"
    if scheme == "http" and settings.require_https:
        return "https is required (HERALD_REQUIRE_HTTPS=true), the URL uses http"
    return None


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where the network would deliver to it."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
