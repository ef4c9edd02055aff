"""DNS for carrier gateways: SRV (RFC 2782, RFC 3263 §4.2) and A/AAAA, with dnspython's
asyncio resolver.

A gateway given as a bare host name is looked up as `_sip._udp.<name>` first, then its SRV
targets' addresses. dnspython brings what a stub resolver on the open internet needs and a
hand-written one lacked: EDNS0 (answers up to 1,232 bytes in a datagram, the DNS Flag Day 2020
size that avoids IP fragmentation, instead of 512), a retry over TCP when an answer comes back
truncated (RFC 7766 §5), /etc/resolv.conf's nameservers with its `options` (timeout, attempts,
rotate, ndots), and a bounded cache that honours each record's TTL, so re-resolving every few
minutes costs nothing while the records stand.

Names with no records and timeouts are empty answers; servers that fail (SERVFAIL from all,
nonsense) raise `DnsError`, which the gateway table treats as "keep the last answer".
Addresses the resolver cannot find (a name in /etc/hosts only) fall back to the system
resolver, getaddrinfo.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from core.net.identity import is_ip_literal
from core.trunks.gateways import SrvRecord

DNS_PORT = 53
EDNS_PAYLOAD = 1_232  # bytes: DNS Flag Day 2020's datagram size, below common MTUs
CACHE_ENTRIES = 4_096  # (name, type) answers kept; least recently used go first
DEFAULT_TIMEOUT = 2.0  # seconds for one look-up, every retry included


class DnsError(ValueError):
    """A DNS answer we cannot use: the servers failed, or answered nonsense."""


class SrvResolver:
    """`await resolver(name)` → SRV records; `await resolver.addresses(host)` → IPs.

    `nameservers` and `port` replace resolv.conf's servers (tests run their own server on
    loopback); otherwise /etc/resolv.conf is read, options included.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = DNS_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        self.timeout = timeout
        self.resolver = _make_resolver(nameservers, port, resolv_conf)
        self.resolver.lifetime = timeout
        self.resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        self.resolver.use_edns(0, 0, EDNS_PAYLOAD)

    @property
    def nameservers(self) -> list[str]:
        return [str(server) for server in self.resolver.nameservers]

    async def __call__(self, name: str) -> list[SrvRecord]:
        """The SRV records of `name` (`_sip._udp.carrier.example`); [] when there are none."""
        answer = await self._query(name, "SRV")
        return [
            SrvRecord(rr.priority, rr.weight, rr.port, rr.target.to_text(omit_final_dot=True))
            for rr in answer
        ]

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host`, through DNS, else through getaddrinfo
        (/etc/hosts and the rest of nsswitch)."""
        if is_ip_literal(host):
            return [host]
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            with contextlib.suppress(DnsError):
                found += [rr.address for rr in await self._query(host, rdtype)]
        if found:
            return list(dict.fromkeys(found))
        return await _system_addresses(host, self.timeout)

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        """The answer's records (dnspython rdata objects); [] for none, a timeout included."""
        if not self.resolver.nameservers:
            return []
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            return []
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as error:
            raise DnsError(f"{rdtype} {name}: {error}") from None
        return list(answer)


def _make_resolver(
    nameservers: Sequence[str] | None, port: int, resolv_conf: str
) -> dns.asyncresolver.Resolver:
    if nameservers is not None:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(nameservers)
        resolver.port = port
        return resolver
    try:
        return dns.asyncresolver.Resolver(filename=resolv_conf)
    except (OSError, dns.resolver.NoResolverConfiguration):
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = []  # no resolv.conf: SRV finds nothing, getaddrinfo still runs
        return resolver


async def _system_addresses(host: str, timeout: float) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM), timeout
        )
    except (TimeoutError, OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
