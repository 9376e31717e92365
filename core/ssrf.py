"""Which callback URLs Courier may POST to (docs/contract.md, Webhooks): the SSRF guard.

A callback URL must be an absolute ``http(s)://`` URL without credentials whose host
resolves only to public addresses. Addresses are judged *after* resolving, every one of
them, so spellings such as ``127.1``, ``2130706433`` or ``0x7f000001`` (all 127.0.0.1)
cannot slip through, and IPv4 addresses embedded in IPv6 (IPv4-mapped, NAT64
``64:ff9b::/96``, 6to4 ``2002::/16``) are judged as the IPv4 address they reach.
Python's ``ipaddress`` alone is not enough: it calls multicast, site-local, 6to4 and
NAT64 addresses global, so the rules below add those.

The API checks at submission; the sender checks again when it connects and connects
only to an address it checked (see :mod:`workers.webhooks.transport`), so a name that
resolves to a public address first and a private one later (DNS rebinding) gets nowhere.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from core.errors import CallbackHostUnresolved, UnsafeCallbackURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _embedded(address.ipv4_mapped, "IPv4-mapped")
        if address in NAT64:
            return _embedded(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64")
        if address.sixtofour is not None:
            return _embedded(address.sixtofour, "6to4")
        if address.teredo is not None:
            return f"Teredo (embeds {address.teredo[1]})"
        if address in NAT64_LOCAL:
            return "local-use NAT64"
        if address in IPV4_COMPATIBLE and int(address) > 1:
            return "IPv4-compatible (deprecated)"
        if address.is_site_local:
            return "site-local"
    elif address in CGNAT:
        return "shared address space (CGNAT)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None


def _embedded(inner: ipaddress.IPv4Address, how: str) -> str | None:
    reason = non_public_reason(inner)
    return f"{how} {inner}, {reason}" if reason else None


def is_public(address: IPAddress) -> bool:
    return non_public_reason(address) is None


def parse_callback_url(url: str, *, require_https: bool = False) -> SplitResult:
    """Check the form of a callback URL; returns its parts (hostname and port valid)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise UnsafeCallbackURL(f"callback_url is not a valid URL ({exc})") from None
    allowed = ("https",) if require_https else ("http", "https")
    if parts.scheme not in allowed or not parts.hostname:
        need = "https://" if require_https else "http:// or https://"
        raise UnsafeCallbackURL(f"callback_url must be an absolute {need} URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeCallbackURL("callback_url must not carry credentials (user:password@)")
    return parts


def default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (patched in tests)."""
    try:
        return [ipaddress.ip_address(host)]  # a literal (dotted or IPv6) needs no lookup
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


def checked_addresses(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """Resolve ``host`` and refuse it unless every address is public (or private ones
    are allowed). The addresses returned are the only ones a caller may connect to."""
    try:
        addresses = resolve(host.strip("[]"), port)
    except (OSError, UnicodeError) as exc:
        raise CallbackHostUnresolved(f"callback host {host!r} does not resolve ({exc})") from None
    if not addresses:
        raise CallbackHostUnresolved(f"callback host {host!r} has no address")
    if not allow_private:
        for address in addresses:
            reason = non_public_reason(address)
            if reason:
                raise UnsafeCallbackURL(
                    f"callback_url host {host!r} resolves to a non-public address "
                    f"({address}: {reason}); set COURIER_CALLBACK_ALLOW_PRIVATE=true to allow it"
                )
    return addresses


def check_callback_url(url: str, allow_private: bool, *, require_https: bool = False) -> None:
    """Raise :class:`UnsafeCallbackURL` (a ``ValueError``) naming the problem when ``url``
    may not receive webhooks. A name that does not resolve now is accepted: the sender
    checks again when it connects."""
    parts = parse_callback_url(url, require_https=require_https)
    if allow_private:
        return
    assert parts.hostname is not None
    try:
        checked_addresses(parts.hostname, default_port(parts), allow_private)
    except CallbackHostUnresolved:
        return
