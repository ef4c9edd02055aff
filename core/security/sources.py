"""What the security counters count by: one IPv4 address, or one IPv6 allocation.

An IPv6 host usually holds a whole /64 (RFC 4291 §2.5.4 interface identifiers; RFC 8981
temporary addresses rotate inside it), so counting floods and failed logins per IPv6
address lets an attacker reset every counter by changing the low 64 bits. IPv6 sources are
counted, and banned, per prefix (`ipv6_prefix_length`, 64 by default; 128 counts single
addresses). IPv4 addresses, and IPv4-mapped IPv6 ones, are counted one by one.
"""

from __future__ import annotations

import ipaddress

_MAX_CACHED_KEYS = 65_536


class SourceKeys:
    """`key(ip)` → the string the flood, brute-force and ban tables use for that source."""

    __slots__ = ("_keys", "prefix_length")

    def __init__(self, ipv6_prefix_length: int = 64) -> None:
        if not 1 <= ipv6_prefix_length <= 128:
            raise ValueError("ipv6_prefix_length must be 1..128")
        self.prefix_length = ipv6_prefix_length
        self._keys: dict[str, str] = {}

    def key(self, ip: str) -> str:
        """`ip` itself for IPv4 (the hot path: one `in` test); the prefix for IPv6."""
        if ":" not in ip or self.prefix_length == 128:
            return ip
        cached = self._keys.get(ip)
        if cached is not None:
            return cached
        try:
            address = ipaddress.IPv6Address(ip.split("%", 1)[0])
        except ValueError:
            return ip
        if address.ipv4_mapped is not None:
            key = str(address.ipv4_mapped)
        else:
            network = ipaddress.IPv6Network((address, self.prefix_length), strict=False)
            key = str(network)
        if len(self._keys) >= _MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[ip] = key
        return key


def canonical_source(text: str) -> str:
    """An address or a banned prefix as the ban table keys it; ValueError for anything else."""
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or prefix") from None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
