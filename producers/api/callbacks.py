"""Checks a ``callback_url`` at submission (SPEC §4): http(s) only, and, unless
``COURIER_CALLBACK_ALLOW_PRIVATE`` is true, no host that resolves to a loopback,
private, link-local, shared (CGNAT), metadata or otherwise non-public address.

Addresses are checked after resolving (``127.1`` and ``2130706433`` are 127.0.0.1),
including IPv4 addresses embedded in IPv6 (mapped, 6to4, NAT64). A name that does not
resolve now is accepted: the webhook sender checks again when it connects.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

SHARED = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    if isinstance(address, ipaddress.IPv4Address) and address in SHARED:
        return False
    return address.is_global and not address.is_multicast


def check_callback_url(url: str, allow_private: bool) -> None:
    """Raise ValueError naming the problem when ``url`` may not receive webhooks."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"callback_url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("callback_url must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("callback_url must not carry credentials")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not is_public(address):
            raise ValueError(
                f"callback_url resolves to a non-public address ({address}); "
                "set COURIER_CALLBACK_ALLOW_PRIVATE=true to allow it"
            )
