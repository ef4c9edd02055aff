"""Who "we" are on the wire: the SIP domain, the addresses and ports we listen on.

The route asks "is this request addressed to us?" (OPTIONS keep-alives, REGISTER's
Request-URI, loose routing) and the proxy stamps our Via and Record-Route with an address the
peer can reach, which is the local address the request arrived on, never 0.0.0.0.
"""

from __future__ import annotations

import contextlib
import socket

from core.net.flow import Flow
from core.settings import ListenAddress
from core.sip.uri import SipUri, Uri, format_host

_WILDCARDS = {"0.0.0.0", "::"}
_SOURCE_CACHE_LIMIT = 4_096


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
        self.listen: tuple[ListenAddress, ...] = ()
        self.ports: set[int] = set()
        self.addresses: set[str] = set()
        self.names: set[str] = set()
        self._source_cache: dict[str, str] = {}
        self.bind(listen)

    def bind(self, listen: list[ListenAddress] | tuple[ListenAddress, ...]) -> None:
        """The addresses actually bound (port 0 becomes the real port): every part holding
        this identity names them from now on."""
        self.listen = tuple(listen)
        self.ports = {address.port for address in listen}
        hosts = {address.host for address in listen}
        addresses = {host for host in hosts if host not in _WILDCARDS}
        if hosts & _WILDCARDS:
            addresses |= _interface_addresses()
        self.addresses = addresses
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
        """The address to put in our Via / Record-Route for a message sent on `flow`.

        A socket bound to a wildcard (0.0.0.0, the default) reports that wildcard as its local
        address, which no phone can reach: use the address the kernel picks as source towards
        the peer instead.
        """
        host = flow.local[0]
        if host in _WILDCARDS:
            host = self.source_address_towards(flow.remote[0])
        return f"{format_host(host)}:{flow.local[1]}"

    def source_address_towards(self, remote_ip: str) -> str:
        """The local address the kernel routes from towards `remote_ip` (cached, bounded).

        A connected UDP socket sends nothing; connect() only asks the routing table.
        """
        cached = self._source_cache.get(remote_ip)
        if cached is not None:
            return cached
        family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
        address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((remote_ip, 9))
            address = str(probe.getsockname()[0])
        if len(self._source_cache) >= _SOURCE_CACHE_LIMIT:
            self._source_cache.clear()
        self._source_cache[remote_ip] = address
        return address
