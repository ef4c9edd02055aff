"""Carrier gateways: which to try for an outbound call, in what order, at which addresses.

Each enabled carrier with a gateway (`host:port`, `host`, `[v6]:port`, or, with no gateway
set, its one single-host address and port) is one `Gateway`. The order of a call's attempts
is the carriers' priority (lower first, then name), and within a carrier the order its name
resolved to: RFC 3263 §4.2 — a host with an explicit port, or an IP address, is looked up
with A/AAAA only; a bare host name is looked up as SRV `_sip._udp.<host>` (`_sip._tcp` for
TCP) first, targets ordered by RFC 2782 (priority, then weighted random), and falls back to
A/AAAA at the carrier's port when no SRV record exists.

The route never waits for DNS: `GatewayTable` holds what was resolved (pure, used on the hot
path), and `resolve()` is the coroutine the trunks run when carriers are loaded and every
`REFRESH_SECONDS` after, keeping the last good answer when a refresh fails. Host names go
through the event loop's `getaddrinfo` (a thread, the system resolver); SRV goes through
`core.net.dns` (a small DNS client over UDP), which is optional.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from core.sip.errors import SipParseError
from core.sip.hostport import format_host, format_hostport, parse_hostport
from core.store.rows import CarrierRow

SIP_PORT = 5060
SIPS_PORT = 5061  # RFC 3261 §19.1.2: SIP over TLS
DNS_TIMEOUT = 2.0  # per name; a carrier whose name does not resolve in time is skipped
REFRESH_SECONDS = 300.0  # getaddrinfo gives no TTL: re-resolve every five minutes
MAX_ADDRESSES_PER_GATEWAY = 4  # a name with twenty A records still costs four attempts
MAX_TARGETS = 8  # attempts per call across all carriers: failover must end somewhere


@dataclass(frozen=True, slots=True)
class Gateway:
    """Where one carrier takes outbound calls, and the credentials for its challenges."""

    carrier: str
    host: str  # a name or an IP address, without brackets
    port: int | None  # as configured; None: SRV first, then `default_port`
    default_port: int = SIP_PORT
    transport: str = "udp"
    priority: int = 10
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def is_address(self) -> bool:
        """An IP literal: nothing to resolve."""
        return _is_ip(self.host)

    @property
    def has_credentials(self) -> bool:
        return bool(self.username) and self.password is not None

    @property
    def srv_name(self) -> str | None:
        """The SRV name to ask (RFC 3263 §4.2), or None when SRV does not apply."""
        if self.port is not None or self.is_address:
            return None
        if self.transport == "tls":
            return f"_sips._tcp.{self.host}"  # RFC 3263 §4.1
        return f"_sip._{self.transport}.{self.host}"


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV answer (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class GatewayTarget:
    """One attempt: a gateway at one resolved address."""

    gateway: Gateway
    ip: str
    port: int
    uri_hostport: str  # host[:port] for the Request-URI: the name as configured

    @property
    def transport(self) -> str:
        return self.gateway.transport


SrvLookup = Callable[[str], Awaitable[list[SrvRecord]]]
HostLookup = Callable[[str], Awaitable[list[str]]]  # a name's addresses (A, AAAA)


def parse_gateway(text: str) -> tuple[str, int | None]:
    """A carrier gateway as an operator writes it → (host without brackets, port or None).

    `host:port`, `host`, `[v6]:port`, `[v6]`, or a bare IPv6 address (unambiguous without a
    port). The host follows the SIP grammar (`core.sip.hostport`), because it goes into the
    Request-URI of every outbound call. No port means "look up SRV first" (RFC 3263 §4.2), so
    a bare host stays bare. Raises `ValueError` with a sentence naming the gateway.
    """
    text = text.strip()
    if ":" in text and not text.startswith("[") and _is_ip(text):  # IPv6 needs no brackets
        return text, None
    try:
        return parse_hostport(text)
    except SipParseError as exc:
        if exc.reason == "Bad port":
            raise ValueError(f"gateway {text!r}: port must be 1-65535") from None
        raise ValueError(f"gateway {text!r} is not HOST[:PORT] (IPv6 in brackets)") from None


def format_gateway(host: str, port: int | None) -> str:
    """The stored form of a parsed gateway: `parse_gateway` reads it back unchanged."""
    return format_hostport(host, port)


def gateway_of(carrier: CarrierRow) -> Gateway | None:
    """The carrier's outbound gateway; None for a disabled or inbound-only carrier.

    With no gateway configured, a carrier whose one address is a single host (a /32 or
    /128) takes calls there, at its port: the common "one SBC IP" trunk.
    """
    if not carrier.enabled:
        return None
    if carrier.gateway:
        try:
            host, port = parse_gateway(carrier.gateway)
        except ValueError:
            return None
    else:
        hosts = [_single_host(address) for address in carrier.addresses]
        if len(hosts) != 1 or hosts[0] is None:
            return None
        host, port = hosts[0], carrier.port
    return Gateway(
        carrier=carrier.name,
        host=host,
        port=port,
        default_port=carrier.port or SIP_PORT,
        transport=carrier.transport,
        priority=carrier.priority,
        username=carrier.username,
        password=carrier.password,
    )


def _single_host(address: str) -> str | None:
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None
    return str(network.network_address) if network.num_addresses == 1 else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_srv(records: Iterable[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """RFC 2782 order: lowest priority first; within a priority, a weighted random draw.
    A lone "." target means no service there."""
    rng = rng or random.Random()
    usable = [record for record in records if record.target not in ("", ".")]
    ordered: list[SrvRecord] = []
    for priority in sorted({record.priority for record in usable}):
        group = [record for record in usable if record.priority == priority]
        # RFC 2782 "Usage rules": zero-weight records first in the list, then the running-sum
        # draw, so they are picked only when the draw is 0 (rarely, while others remain).
        group.sort(key=lambda record: record.weight != 0)
        while group:
            total = sum(record.weight for record in group)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


class GatewayTable:
    """The gateways in the order calls try them, with the addresses each resolved to."""

    __slots__ = ("_owned", "_resolved", "gateways")

    def __init__(self, gateways: Iterable[Gateway] = ()) -> None:
        self.gateways: list[Gateway] = sorted(
            gateways, key=lambda gateway: (gateway.priority, gateway.carrier)
        )
        # carrier → (addresses, whether SRV chose them): what targets() hands out.
        self._resolved: dict[str, tuple[tuple[tuple[str, int], ...], bool]] = {}
        for gateway in self.gateways:
            if gateway.is_address:
                port = gateway.port or gateway.default_port
                self._resolved[gateway.carrier] = (((gateway.host, port),), False)
        # Every configured host and resolved address, lower-cased: `owns` is asked per
        # REGISTER (is a contact a carrier's?), so it is one set look-up, not a scan.
        self._owned: set[str] = set()
        self._index()

    def _index(self) -> None:
        owned = {gateway.host.lower() for gateway in self.gateways}
        for addresses, _srv in self._resolved.values():
            owned.update(ip.lower() for ip, _port in addresses)
        self._owned = owned

    def __len__(self) -> int:
        return len(self.gateways)

    @property
    def names_to_resolve(self) -> list[Gateway]:
        return [gateway for gateway in self.gateways if not gateway.is_address]

    def set_resolved(
        self, gateway: Gateway, addresses: Iterable[tuple[str, int]], *, via_srv: bool = False
    ) -> None:
        """Record a lookup's answer; an empty answer keeps the previous one (serve stale:
        a DNS hiccup must not take the trunk down)."""
        unique = tuple(dict.fromkeys(addresses))[:MAX_ADDRESSES_PER_GATEWAY]
        if unique:
            self._resolved[gateway.carrier] = (unique, via_srv)
            self._index()

    def owns(self, host: str) -> bool:
        """Is `host` a gateway's configured host or one of the addresses it resolved to?"""
        return host.lower() in self._owned

    def addresses(self, gateway: Gateway) -> tuple[tuple[str, int], ...]:
        return self._resolved.get(gateway.carrier, ((), False))[0]

    def targets(self, usable: Callable[[str], bool] | None = None) -> list[GatewayTarget]:
        """Every attempt a call may make, in order, at most `MAX_TARGETS`. `usable` filters
        addresses we cannot send to (an IPv6 gateway when we listen on IPv4 only)."""
        targets: list[GatewayTarget] = []
        for gateway in self.gateways:
            addresses, via_srv = self._resolved.get(gateway.carrier, ((), False))
            for ip, port in addresses:
                if usable is not None and not usable(ip):
                    continue
                targets.append(GatewayTarget(gateway, ip, port, _uri_hostport(gateway, via_srv)))
                if len(targets) >= MAX_TARGETS:
                    return targets
        return targets


def _uri_hostport(gateway: Gateway, via_srv: bool) -> str:
    """The Request-URI names the gateway as configured (RFC 3263: the name, not the address
    it resolved to), with the port when one was given or the default is not 5060."""
    host = format_host(gateway.host)
    if gateway.port is not None:
        return f"{host}:{gateway.port}"
    if via_srv or gateway.default_port == SIP_PORT:
        return host
    return f"{host}:{gateway.default_port}"


async def resolve(
    gateway: Gateway,
    *,
    srv: SrvLookup | None = None,
    hosts: HostLookup | None = None,
    timeout: float = DNS_TIMEOUT,
) -> tuple[list[tuple[str, int]], bool]:
    """Addresses for a gateway and whether SRV gave them; ([], False) when nothing resolved
    in time. `hosts` looks names up (core/net/dns.py), else the system resolver does.
    Never raises for a DNS failure: the caller keeps the previous answer."""
    if gateway.is_address:
        return [(gateway.host, gateway.port or gateway.default_port)], False
    srv_name = gateway.srv_name
    if srv is not None and srv_name is not None:
        try:
            records = await asyncio.wait_for(srv(srv_name), timeout)
        except (TimeoutError, OSError, ValueError):
            records = []
        found: list[tuple[str, int]] = []
        for record in order_srv(records):
            for ip in await _lookup(record.target, record.port, gateway.transport, timeout, hosts):
                found.append((ip, record.port))
        if found:
            return found, True
    port = gateway.port or gateway.default_port
    addresses = await _lookup(gateway.host, port, gateway.transport, timeout, hosts)
    return [(ip, port) for ip in addresses], False


async def _lookup(
    host: str, port: int, transport: str, timeout: float, hosts: HostLookup | None
) -> list[str]:
    """A/AAAA through `hosts`, or the system resolver (getaddrinfo in the loop's executor)."""
    if _is_ip(host):
        return [host]
    if hosts is not None:
        try:
            return await asyncio.wait_for(hosts(host), timeout)
        except (TimeoutError, OSError, ValueError):
            return []
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=kind), timeout)
    except (TimeoutError, OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
