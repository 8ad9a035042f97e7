"""Which URLs the crawler may fetch.

Only http(s). A host must resolve to public addresses only (no loopback, private,
link-local, multicast or reserved ones) unless the policy allows private addresses
(the embedded local engine) or names the host as trusted (an intranet engine). The
downloader connects to the address that was checked, so a second DNS answer cannot
swap in a private one (DNS rebinding), and it re-checks every redirect hop.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit


class UnsafeURL(ValueError):
    """A URL the policy refuses; the message is the failure-log reason."""


Resolver = Callable[[str, int], list[str]]


def system_resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UnsafeURL(f"cannot resolve {host}: {err.strerror}") from err
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class Policy:
    allow_private: bool = False                     # the local engine only
    trusted_hosts: frozenset[str] = field(default_factory=frozenset)
    resolve: Resolver = system_resolve


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    address: str | None   # the checked IP to connect to; None: connect by name (trusted)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def check_url(url: str, policy: Policy) -> Target:
    """Raise UnsafeURL with a reason, or return where to connect."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"scheme {parts.scheme or '(none)'!r} not allowed (http/https only)")
    if parts.username or parts.password:
        raise UnsafeURL("credentials in URL not allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeURL("URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise UnsafeURL(f"bad port: {err}") from err
    if policy.allow_private or host in policy.trusted_hosts:
        return Target(url, host, port, None)
    addresses = [host] if _is_ip(host) else policy.resolve(host, port)
    if not addresses:
        raise UnsafeURL(f"cannot resolve {host}")
    for address in addresses:
        if not is_public(address):
            raise UnsafeURL(f"non-public address {address} for {host}")
    return Target(url, host, port, addresses[0])
