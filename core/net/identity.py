"""Who "we" are on the wire: the SIP domain, the addresses and ports we listen on.

The route asks "is this request addressed to us?" (OPTIONS keep-alives, REGISTER's
Request-URI, loose routing) and the proxy stamps our Via and Record-Route with an address the
peer can reach: a listener's advertised address when it has one (1:1 NAT in a cloud), else the
local address the request arrived on, never 0.0.0.0.

"Us" is Kamailio's `myself`: the domain, the host name, every address we listen on (for a
wildcard listener, every address of this host, asked of the kernel by binding a probe socket),
and every advertised address, so a phone configured with the server's IP, public or private,
registers as well as one configured with the domain.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import Final

from core.net.flow import Flow
from core.settings import ListenAddress
from core.sip.bounded import make_room
from core.sip.hostport import format_host
from core.sip.uri import SipUri, Uri

_WILDCARDS = {"0.0.0.0", "::"}
# One entry per phone's address (a miss: a socket, connect, getsockname, ~24 us): sized for
# ~16,000 phones (a small entry each), as with fewer entries than phones nearly every
# forwarded message missed.
_SOURCE_CACHE_LIMIT = 16_384
_HOSTPORT_LIMIT: Final = 1_024  # (transport, local address) pairs: one per socket we send from
_LOCAL_CACHE_LIMIT = 4_096
_DEFAULT_ROUTE_PROBE = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address written out (no DNS needed to send to it)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _interface_addresses() -> set[str]:
    """Best-effort list of this host's addresses, for a wildcard listen."""
    addresses = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]))
    return addresses


def _is_local_ip(ip: str) -> bool:
    """Whether `ip` is an address of this host: only a local address can be bound."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if parsed.is_unspecified or parsed.is_multicast:
        return False
    family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((ip, 0))
        return True
    return False


class ServerIdentity:
    def __init__(
        self, domain: str, listen: list[ListenAddress] | tuple[ListenAddress, ...]
    ) -> None:
        self.domain = domain.lower()
        self.listen: tuple[ListenAddress, ...] = ()
        self.ports: set[int] = set()
        self.addresses: set[str] = set()
        self.host_names: set[str] = set()
        self._wildcard_v4 = False
        self._wildcard_v6 = False
        self._local_cache: dict[str, bool] = {}
        self._source_cache: dict[str, str] = {}
        self._hostports: dict[tuple[str, str, int], str] = {}
        self.bind(listen)

    def bind(self, listen: list[ListenAddress] | tuple[ListenAddress, ...]) -> None:
        """The addresses actually bound (port 0 becomes the real port): every part holding
        this identity names them from now on."""
        self.listen = tuple(listen)
        self.ports = {address.port for address in listen} | {
            address.advertise_port for address in listen if address.advertise_port
        }
        hosts = {address.host for address in listen}
        addresses = {host for host in hosts if host not in _WILDCARDS}
        if hosts & _WILDCARDS:
            addresses |= _interface_addresses()
        advertised = {address.advertise_host for address in listen if address.advertise_host}
        self.addresses = addresses | {host for host in advertised if is_ip_literal(host)}
        self.host_names = {self.domain, socket.gethostname().lower()} | {
            host.lower() for host in advertised if not is_ip_literal(host)
        }
        self.host_names.discard("")
        # Wildcard listeners take every local address of their family.
        self._wildcard_v4 = "0.0.0.0" in hosts
        self._wildcard_v6 = "::" in hosts
        self._local_cache = {}
        self._source_cache = {}
        self._hostports = {}

    def is_us(self, uri: Uri) -> bool:
        """A SIP URI naming our domain or host name, or one of our addresses on one of our
        ports (any port when the URI names none)."""
        if not isinstance(uri, SipUri):
            return False
        host = uri.host.lower()
        if host in self.host_names:
            return True
        if uri.port is not None and uri.port not in self.ports:
            return False
        return host in self.addresses or self._is_wildcard_address(host)

    def is_own_address(self, ip: str, port: int | None = None) -> bool:
        return ip in self.addresses and (port is None or port in self.ports)

    def _is_wildcard_address(self, host: str) -> bool:
        """An address of this host that a wildcard listener receives on (cached, bounded)."""
        if ":" in host:
            if not self._wildcard_v6:
                return False
        elif not self._wildcard_v4:
            return False
        known = self._local_cache.get(host)
        if known is not None:
            return known
        local = _is_local_ip(host)
        make_room(self._local_cache, _LOCAL_CACHE_LIMIT)
        self._local_cache[host] = local
        return local

    def listener_for(self, flow: Flow) -> ListenAddress | None:
        """The listener a flow belongs to: same transport and port, same host or a wildcard."""
        host, port = flow.local
        wildcard: ListenAddress | None = None
        for address in self.listen:
            if address.transport != flow.transport or address.port != port:
                continue
            if address.host == host:
                return address
            if address.host in _WILDCARDS and (":" in address.host) == (":" in host):
                wildcard = address
        return wildcard

    def hostport(self, flow: Flow) -> str:
        """The address to put in our Via / Record-Route for a message sent on `flow`.

        The listener's advertised address when it has one. Otherwise the local address: a
        socket bound to a wildcard (0.0.0.0, the default) reports that wildcard, which no
        phone can reach, so use the address the kernel picks as source towards the peer.

        The answer for a flow whose own local address decides it (an advertised listener,
        a socket bound to one address) is kept per (transport, local address): a forwarded
        call asks it for every Via, Record-Route and SDP it writes. On a wildcard socket
        without one the peer's address decides: "" is kept, meaning just that, so the
        listeners are not walked again. A handful of entries, one per socket we send from;
        forgotten on `bind`.
        """
        local = flow.local
        key = (flow.transport, local[0], local[1])
        hostport = self._hostports.get(key)
        if hostport is None:
            hostport = self._local_hostport(flow)
            if len(self._hostports) >= _HOSTPORT_LIMIT:
                self._hostports.clear()  # only a host with thousands of addresses gets here
            self._hostports[key] = hostport
        if hostport:
            return hostport
        return f"{format_host(self.source_address_towards(flow.remote[0]))}:{local[1]}"

    def _local_hostport(self, flow: Flow) -> str:
        """`hostport` as the listeners and the local address decide it; "" when the socket
        is a wildcard without an advertised address, where the peer's address decides."""
        listener = self.listener_for(flow)
        if listener is not None and listener.advertise_host:
            return listener.advertised
        host = flow.local[0]
        if host in _WILDCARDS:
            return ""
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
        # connect() to a host name would resolve it right here, blocking the event loop on
        # DNS: for a name, ask the routing table about the default route instead (TEST-NET,
        # RFC 5737; a connected UDP socket sends nothing).
        probe_ip = remote_ip if is_ip_literal(remote_ip) else _DEFAULT_ROUTE_PROBE[family]
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((probe_ip, 9))
            address = str(probe.getsockname()[0])
        make_room(self._source_cache, _SOURCE_CACHE_LIMIT)
        self._source_cache[remote_ip] = address
        return address
