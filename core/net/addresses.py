"""IP address and network helpers for trust decisions on the hot path.

Carriers are recognised by their source address, allow-lists exempt ranges from flood
detection, and the registrar compares a Contact's host with the packet's source to detect NAT.
All three ask "is this address in that set?" once per SIP message, so `AddressSet` answers it
with a few integer masks and set look-ups instead of walking a list of `ip_network` objects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import ClassVar

from core.sip.bounded import make_room

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network

_V4_BITS = 32
_V6_BITS = 128


def parse_ip(text: str) -> IpAddress:
    """Parse one address, accepting the `[v6]` form used in SIP URIs and Via headers.

    An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket reports for IPv4
    peers) comes back as the IPv4 address, so it matches IPv4 carrier ranges and bans.
    Raises `ValueError` naming the bad text.
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IpNetwork:
    """Parse `ADDR` or `ADDR/PREFIX` into a network; a bare address is a /32 or /128.

    Host bits are allowed and cleared (`192.0.2.7/24` means `192.0.2.0/24`) because that is
    how carriers usually write their ranges in interop documents.
    Raises `ValueError` with a message that names the bad text.
    """
    candidate = text.strip()
    if not candidate:
        raise ValueError("empty address")
    address_part, slash, prefix_part = candidate.partition("/")
    address = parse_ip(address_part)
    if not slash:
        return ipaddress.ip_network(address)
    max_bits = _V4_BITS if address.version == 4 else _V6_BITS
    if not prefix_part.isdigit() or not 0 <= int(prefix_part) <= max_bits:
        raise ValueError(f"{text!r}: prefix length must be 0-{max_bits}")
    return ipaddress.ip_network(f"{address}/{int(prefix_part)}", strict=False)


def parse_networks(texts: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Parse a list of CIDR strings; the first bad entry raises `ValueError` naming it."""
    return tuple(parse_network(text) for text in texts)


class AddressSet:
    """A fixed set of IPv4/IPv6 networks with an O(prefix lengths) membership test.

    Networks are stored as `{prefix length: {network integer}}` per IP version, so a lookup
    masks the address once per distinct prefix length present (usually one or two) and does a
    set look-up; a thousand /32 carrier addresses cost the same as one.
    """

    __slots__ = ("_answers", "_networks", "_v4_masks", "_v6_masks")

    # Sources repeat (phones re-register, carriers send every call from the same few hosts),
    # so answers for address strings are memoised; the cache is cleared when full, which
    # bounds it even under a flood of random source addresses.
    # One answer per source address asked about (every phone's request, once trunks or an
    # allow-list are configured): sized for ~4,000 busy phones, the oldest eighth dropped when
    # full (emptying it instead made each look-up a parse: 63 ns -> 5 us at 10,000 sources).
    _MAX_CACHED_ANSWERS: ClassVar[int] = 4_096

    def __init__(self, networks: Iterable[IpNetwork | str] = ()) -> None:
        parsed = [n if not isinstance(n, str) else parse_network(n) for n in networks]
        self._networks: tuple[IpNetwork, ...] = tuple(parsed)
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for network in parsed:
            table = v4 if network.version == 4 else v6
            table.setdefault(network.prefixlen, set()).add(int(network.network_address))
        self._v4_masks = _mask_table(v4, _V4_BITS)
        self._v6_masks = _mask_table(v6, _V6_BITS)
        self._answers: dict[str, bool] = {}

    @property
    def networks(self) -> tuple[IpNetwork, ...]:
        """The networks as given, for display and for saving back."""
        return self._networks

    def __len__(self) -> int:
        return len(self._networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"AddressSet({[str(n) for n in self._networks]!r})"

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str | IPv4Address | IPv6Address):
            return False
        return self.contains(ip)

    def contains(self, ip: str | IpAddress) -> bool:
        """True when `ip` lies in one of the networks; unparsable text is simply not a member."""
        if isinstance(ip, str):
            answer = self._answers.get(ip)
            if answer is None:
                try:
                    answer = self._contains_address(parse_ip(ip))
                except ValueError:
                    answer = False
                make_room(self._answers, self._MAX_CACHED_ANSWERS)
                self._answers[ip] = answer
            return answer
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return self._contains_address(ip)

    def _contains_address(self, ip: IpAddress) -> bool:
        masks = self._v4_masks if ip.version == 4 else self._v6_masks
        value = int(ip)
        return any(value & mask in members for mask, members in masks)


def _mask_table(
    by_prefix: dict[int, set[int]], bits: int
) -> tuple[tuple[int, frozenset[int]], ...]:
    """Turn `{prefix length: networks}` into `(mask, networks)` pairs, longest prefix first."""
    full = (1 << bits) - 1
    return tuple(
        ((full << (bits - prefix)) & full, frozenset(members))
        for prefix, members in sorted(by_prefix.items(), reverse=True)
    )


# Addresses that are not reachable from the public Internet. A Contact using one of these
# while the packet came from elsewhere means the phone sits behind NAT (RFC 3581 / RFC 5626).
# Loopback is included: a remote phone claiming 127.0.0.1 is just as unreachable.
_NON_PUBLIC = AddressSet(
    [
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",  # RFC 1918
        "192.168.0.0/16",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "169.254.0.0/16",  # RFC 3927 link-local
        "127.0.0.0/8",  # loopback
        "fc00::/7",  # RFC 4193 unique local
        "fe80::/10",  # RFC 4291 link-local
        "::1/128",  # loopback
    ]
)


def is_private(ip: str | IpAddress) -> bool:
    """True for RFC 1918, CGNAT 100.64/10, link-local, IPv6 ULA and loopback addresses.

    This is the registrar's NAT test, not a security boundary. A hostname or anything else
    that does not parse as an IP address returns False: it cannot be judged from the text.
    """
    return _NON_PUBLIC.contains(ip)
