"""Client addresses as throttles count them. Pure."""

from __future__ import annotations

import ipaddress


def address_bucket(address: str) -> str:
    """The throttle bucket of a client address: an IPv6 address counts as its /64 (one
    subscriber's network: rotating through it must not evade a per-address limit), an IPv4
    address as itself, a trailing port dropped. Pure."""
    text = address.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
