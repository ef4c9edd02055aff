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

from core.net.identity import ServerIdentity
from core.sip.uri import SipUri

SIP_PORT = 5060
SIPS_PORT = 5061


class Destinations:
    """`refusal(host, port)` / `contact_refusal(uri)`: why we must not send there, or None."""

    def __init__(
        self,
        identity: Callable[[], ServerIdentity],
        is_carrier_destination: Callable[[str], bool] = lambda host: False,
    ) -> None:
        self._identity = identity  # asked each time: the Pbx learns its ports after binding
        self._is_carrier = is_carrier_destination

    def refusal(self, host: str, port: int) -> str | None:
        identity = self._identity()
        name = host.lower()
        if not _unicast(name):
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
        host = uri.param("maddr") or uri.host
        port = uri.port or (SIPS_PORT if transport == "tls" else SIP_PORT)
        if _loopback(host) and not _loopback(source_ip):
            return "points at this host's loopback from elsewhere"
        return self.refusal(host, port)


def _unicast(host: str) -> bool:
    """False for an address no call may go to: unspecified (0.0.0.0, ::), multicast or
    broadcast (a datagram to the whole LAN). A host name is judged once resolved."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    if address.is_unspecified or address.is_multicast:
        return False
    return not (isinstance(address, ipaddress.IPv4Address) and address == _BROADCAST)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"
