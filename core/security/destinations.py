"""Where a user's contact may never point: this server's own sockets, or a carrier.

A Contact is whatever the phone says. Registered as `sip:+88213...@GATEWAY`, it turned a call
to oneself into a call to the carrier that no outbound policy or limit saw; registered as one
of our own listening sockets, every call to the user looped through the server. The
registrar refuses such Contacts (403, with a security event), and the proxy asks again before
forwarding to any contact, so a binding stored by an older version cannot slip through.

Our own socket means address *and* port: a phone or a test tool on the same host at another
port is legitimate (the benches run that way). A carrier means any address in a carrier's
ranges, a gateway's configured host, or an address a gateway name resolved to. Nor may a
Contact be an unspecified, multicast or broadcast address (an INVITE to the whole LAN).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final

from core.net.identity import ServerIdentity
from core.sip.bounded import make_room
from core.sip.uri import SipUri, target_host

SIP_PORT = 5060
SIPS_PORT = 5061


class Destinations:
    """`refusal(host, port)` / `contact_refusal(uri)`: why we must not send there, or None."""

    def __init__(
        self,
        identity: ServerIdentity,
        is_carrier_destination: Callable[[str], bool] = lambda host: False,
    ) -> None:
        # Shared with the transport's layer: it names the real ports once they are bound.
        self._identity = identity
        self._is_carrier = is_carrier_destination
        # What a host string is (see `_kind`): fixed for a given string, so remembered;
        # bounded, a flood of distinct hosts costs one parse each, as without it.
        self._kinds: dict[str, int] = {}

    def refusal(self, host: str, port: int) -> str | None:
        identity = self._identity
        name = host.lower()
        if self._kind(name) & _NOT_UNICAST:
            return "is not a unicast address"
        if name == identity.domain or identity.is_own_address(name, port):
            return "points at this server"
        if self._is_carrier(name):
            return "points at a carrier"
        return None

    def contact_refusal(self, uri: SipUri, source_ip: str) -> str | None:
        """For a Contact URI registered from `source_ip`: maddr over host, the URI's port or
        its scheme's default. A loopback Contact is only for a phone on this host: from
        anywhere else it would aim calls at this host's local services (a TCP INVITE
        written into a database's port)."""
        transport = uri.transport or ("tls" if uri.secure else "udp")
        host = target_host(uri)
        port = uri.port or (SIPS_PORT if transport == "tls" else SIP_PORT)
        if self._kind(host) & _LOOPBACK and not self._kind(source_ip) & _LOOPBACK:
            return "points at this host's loopback from elsewhere"
        return self.refusal(host, port)

    def _kind(self, host: str) -> int:
        """`_NOT_UNICAST` and `_LOOPBACK` bits for `host`, remembered per string: every
        REGISTER asks about its Contact's host and its source address, and an address
        parse costs more than the rest of the check together."""
        kinds = self._kinds
        kind = kinds.get(host)
        if kind is None:
            kind = _classify(host)
            if len(host) <= _CACHED_HOST_LENGTH:
                make_room(kinds, _KIND_CACHE_LIMIT)
                kinds[host] = kind
        return kind


_NOT_UNICAST = 1
_LOOPBACK = 2
# One entry per phone (its Contact's host and its source address, the same for most), so
# sized for ~4,000 registering at once: with fewer entries than that nearly every REGISTER
# parsed its addresses again (core/sip/bounded.py). Hosts longer than a DNS name are not kept.
_KIND_CACHE_LIMIT: Final = 4_096
_CACHED_HOST_LENGTH: Final = 255
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _classify(host: str) -> int:
    """Not unicast: an address no call may go to, unspecified (0.0.0.0, ::), multicast or
    broadcast (a datagram to the whole LAN). Loopback: 127/8, ::1, or the name localhost.
    Any other host name is neither: it is judged again once resolved."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _LOOPBACK if host.lower() == "localhost" else 0
    broadcast = isinstance(address, ipaddress.IPv4Address) and address == _BROADCAST
    kind = _LOOPBACK if address.is_loopback else 0
    if address.is_unspecified or address.is_multicast or broadcast:
        kind |= _NOT_UNICAST
    return kind
