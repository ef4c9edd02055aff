"""Who "we" are on the wire: the SIP domain, the addresses and ports we listen on.

The route asks "is this request addressed to us?" (OPTIONS keep-alives, REGISTER's
Request-URI, loose routing) and the proxy stamps our Via and Record-Route with an address the
peer can reach, which is the local address the request arrived on, never 0.0.0.0.
"""

from __future__ import annotations

import contextlib
import socket

from core.flow import Flow
from core.settings import ListenAddress
from core.sip.uri import SipUri, Uri, format_host

_WILDCARDS = {"0.0.0.0", "::"}


def _interface_addresses() -> set[str]:
    """Best-effort list of this host's addresses, for a wildcard listen."""
    addresses = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]))
    return addresses


class ServerIdentity:
    def __init__(
        self, domain: str, listen: list[ListenAddress] | tuple[ListenAddress, ...]
    ) -> None:
        self.domain = domain.lower()
        self.listen = tuple(listen)
        self.ports = {address.port for address in listen}
        hosts = {address.host for address in listen}
        self.addresses: set[str] = {host for host in hosts if host not in _WILDCARDS}
        if hosts & _WILDCARDS:
            self.addresses |= _interface_addresses()
        self.names = {self.domain} | {address.lower() for address in self.addresses}

    def is_us(self, uri: Uri) -> bool:
        """A SIP URI naming our domain, or one of our addresses on one of our ports."""
        if not isinstance(uri, SipUri):
            return False
        host = uri.host.lower()
        if host == self.domain:
            return True
        if host in self.addresses:
            return uri.port is None or uri.port in self.ports
        return False

    def is_own_address(self, ip: str, port: int | None = None) -> bool:
        return ip in self.addresses and (port is None or port in self.ports)

    def hostport(self, flow: Flow) -> str:
        """The address to put in our Via / Record-Route for a message sent on `flow`."""
        return f"{format_host(flow.local[0])}:{flow.local[1]}"
