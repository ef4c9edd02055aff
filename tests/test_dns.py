"""The DNS client (core/net/dns.py, dnspython) against a DNS server of our own on loopback:
SRV and A/AAAA, EDNS0, a truncated answer retried over TCP, the cache, resolv.conf's
options, and hostile or failing servers. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.dns_server import DnsServer

from core.net.dns import EDNS_PAYLOAD, DnsError, SrvResolver
from core.trunks.gateways import Gateway, SrvRecord, resolve

TRUNK = "_sip._udp.trunk.example"


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    dns_server = DnsServer(
        records={
            (TRUNK, "SRV"): ["10 60 5060 sip1.trunk.example.", "10 40 5061 sip2.trunk.example."],
            ("sip1.trunk.example", "A"): ["127.0.0.5"],
            ("sip2.trunk.example", "A"): ["127.0.0.6"],
            ("sip2.trunk.example", "AAAA"): ["::1"],
        }
    )
    await dns_server.start()
    try:
        yield dns_server
    finally:
        await dns_server.stop()


def _resolver(server: DnsServer, timeout: float = 2.0) -> SrvResolver:
    return SrvResolver(["127.0.0.1"], port=server.port, timeout=timeout)


async def test_srv_records_with_edns0_and_the_cache(server: DnsServer) -> None:
    resolver = _resolver(server)
    records = await resolver(TRUNK)
    assert sorted(records, key=lambda r: r.port) == [
        SrvRecord(10, 60, 5060, "sip1.trunk.example"),
        SrvRecord(10, 40, 5061, "sip2.trunk.example"),
    ]
    [question] = server.questions
    assert (question.name, question.rdtype, question.transport) == (TRUNK, "SRV", "udp")
    assert question.edns_payload == EDNS_PAYLOAD
    assert await resolver(TRUNK) == records  # from the cache: the TTL is 300 s
    assert len(server.questions) == 1


async def test_a_truncated_answer_is_asked_again_over_tcp(server: DnsServer) -> None:
    # 60 targets do not fit in 1,232 bytes: the UDP answer comes back with TC set.
    big = [f"10 1 {5000 + n} gateway-{n:02}.a-rather-long-carrier-name.example." for n in range(60)]
    server.records[(TRUNK, "SRV")] = big
    records = await _resolver(server)(TRUNK)
    assert len(records) == 60
    assert [q.transport for q in server.questions] == ["udp", "tcp"]


async def test_no_records_and_no_name_are_empty_answers(server: DnsServer) -> None:
    resolver = _resolver(server)
    assert await resolver("_sip._udp.nowhere.example") == []  # NXDOMAIN
    assert await resolver("_sip._udp.sip1.trunk.example") == []  # no such record type here


async def test_a_failing_server_is_an_error_and_a_silent_one_an_empty_answer(
    server: DnsServer,
) -> None:
    server.servfail = True
    with pytest.raises(DnsError, match=r"SRV _sip\._udp\.trunk\.example"):
        await _resolver(server)(TRUNK)
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        port = silent.get_extra_info("sockname")[1]
        started = loop.time()
        assert await SrvResolver(["127.0.0.1"], port=port, timeout=0.3)(TRUNK) == []
        assert loop.time() - started < 2.0  # bounded by the timeout, retries included
    finally:
        silent.close()
    assert await SrvResolver([])(TRUNK) == []


async def test_garbage_before_the_answer_does_not_win(server: DnsServer) -> None:
    server.garbage_first = True
    records = await _resolver(server)(TRUNK)
    assert {r.target for r in records} == {"sip1.trunk.example", "sip2.trunk.example"}


async def test_addresses_by_dns_then_by_the_system_resolver(server: DnsServer) -> None:
    resolver = _resolver(server)
    assert await resolver.addresses("sip2.trunk.example") == ["127.0.0.6", "::1"]
    assert await resolver.addresses("192.0.2.7") == ["192.0.2.7"]
    # Not in DNS: /etc/hosts through getaddrinfo.
    assert "127.0.0.1" in await resolver.addresses("localhost")


async def test_a_gateway_resolves_through_srv_and_the_targets_addresses(
    server: DnsServer,
) -> None:
    resolver = _resolver(server)
    addresses, via_srv = await resolve(
        Gateway("trunk", "trunk.example", None), srv=resolver, hosts=resolver.addresses
    )
    assert via_srv
    assert set(addresses) == {("127.0.0.5", 5060), ("127.0.0.6", 5061), ("::1", 5061)}
    server.servfail = True  # a failure is no answer, never an exception for the trunks
    fresh = _resolver(server)
    assert await resolve(
        Gateway("trunk", "down.example", None), srv=fresh, hosts=fresh.addresses
    ) == ([], False)


def test_resolv_conf_servers_and_options_are_read(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# comment\nsearch example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
        "options timeout:1 attempts:4 rotate\n"
    )
    resolver = SrvResolver(resolv_conf=str(conf))
    assert resolver.nameservers == ["192.0.2.53", "2001:db8::53"]
    assert (resolver.resolver.timeout, resolver.resolver.rotate) == (1.0, True)
    assert SrvResolver(resolv_conf=str(tmp_path / "missing")).nameservers == []
