"""Gateway selection and resolution (core/trunks/gateways.py); the DNS client is in
tests/test_dns.py."""

from __future__ import annotations

import random

import pytest

from core.store.rows import CarrierRow
from core.trunks.gateways import (
    MAX_TARGETS,
    Gateway,
    GatewayTable,
    SrvRecord,
    gateway_of,
    order_srv,
    parse_gateway,
    resolve,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip.carrier.example:5080", ("sip.carrier.example", 5080)),
        ("sip.carrier.example", ("sip.carrier.example", None)),
        ("192.0.2.7:5060", ("192.0.2.7", 5060)),
        ("[2001:db8::7]:5070", ("2001:db8::7", 5070)),
        ("[2001:db8::7]", ("2001:db8::7", None)),
        ("2001:db8::7", ("2001:db8::7", None)),
    ],
)
def test_parse_gateway(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_gateway(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("", ":5060", "host:0", "host:70000", "host:x", "[::1", "a b", "host:", "[::1]x"),
        # It goes into every outbound Request-URI: nothing that could end or extend one.
        *("evil>x", "a;transport=tcp", "user@host", "sip:host", "host\r\nVia: x", "host\x00"),
        *(
            "[127.0.0.1]",
            "[::1]:5060:1",
            "host:\uff15\uff10\uff16\uff10",
            "-host",
            "a" * 100_000 + "!",
        ),
    ],
)
def test_parse_gateway_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gateway(text)


def test_gateway_of_a_carrier() -> None:
    with_gateway = CarrierRow("acme", ("192.0.2.0/24",), gateway="sip.acme.example", port=5080)
    gateway = gateway_of(with_gateway)
    assert gateway is not None
    assert (gateway.host, gateway.port, gateway.default_port) == ("sip.acme.example", None, 5080)
    assert gateway.srv_name == "_sip._udp.sip.acme.example"
    # No gateway, one single-host address: that address at the carrier's port.
    single = gateway_of(CarrierRow("one", ("192.0.2.9/32",), port=5070, transport="tcp"))
    assert single is not None
    assert (single.host, single.port, single.transport) == ("192.0.2.9", 5070, "tcp")
    assert single.srv_name is None
    # A range and no gateway: inbound only. Disabled: nothing.
    assert gateway_of(CarrierRow("range", ("192.0.2.0/24",))) is None
    assert gateway_of(CarrierRow("off", ("192.0.2.9/32",), enabled=False)) is None


def gateway(name: str, host: str, priority: int, port: int | None = 5060) -> Gateway:
    return Gateway(carrier=name, host=host, port=port, priority=priority)


def test_targets_in_priority_order_then_name() -> None:
    table = GatewayTable(
        [
            gateway("zeta", "192.0.2.30", 10),
            gateway("backup", "192.0.2.20", 20),
            gateway("alpha", "192.0.2.10", 10),
        ]
    )
    assert [target.gateway.carrier for target in table.targets()] == ["alpha", "zeta", "backup"]
    assert [target.ip for target in table.targets()] == ["192.0.2.10", "192.0.2.30", "192.0.2.20"]


def test_names_wait_for_resolution_and_keep_the_last_answer() -> None:
    named = gateway("named", "sip.named.example", 1, port=None)
    table = GatewayTable([named, gateway("ip", "192.0.2.10", 5)])
    assert [target.gateway.carrier for target in table.targets()] == ["ip"]  # not resolved yet
    assert table.names_to_resolve == [named]
    table.set_resolved(named, [("192.0.2.1", 5060), ("192.0.2.1", 5060), ("192.0.2.2", 5060)])
    targets = table.targets()
    assert [(t.ip, t.uri_hostport) for t in targets[:2]] == [
        ("192.0.2.1", "sip.named.example"),
        ("192.0.2.2", "sip.named.example"),
    ]
    table.set_resolved(named, [])  # a failed refresh: serve the last good answer
    assert len(table.targets()) == 3
    # Only addresses we can send to; and never more than MAX_TARGETS attempts.
    assert [t.ip for t in table.targets(lambda ip: ip != "192.0.2.1")] == [
        "192.0.2.2",
        "192.0.2.10",
    ]
    many = GatewayTable([gateway(f"c{n:02}", f"192.0.2.{n}", n) for n in range(1, 20)])
    assert len(many.targets()) == MAX_TARGETS


def test_uri_names_the_gateway_with_its_port() -> None:
    table = GatewayTable(
        [
            Gateway("v6", "2001:db8::5", 5070, priority=1),
            Gateway("v4", "192.0.2.5", None, default_port=5080, priority=2),
        ]
    )
    assert [t.uri_hostport for t in table.targets()] == ["[2001:db8::5]:5070", "192.0.2.5:5080"]
    assert [t.port for t in table.targets()] == [5070, 5080]


def test_srv_order_follows_priority_and_weights() -> None:
    records = [
        SrvRecord(20, 0, 5060, "backup.example"),
        SrvRecord(10, 90, 5060, "heavy.example"),
        SrvRecord(10, 10, 5060, "light.example"),
        SrvRecord(5, 0, 5060, "."),  # "no service here"
    ]
    firsts = [order_srv(records, random.Random(seed))[0].target for seed in range(400)]
    assert {first for first in firsts} == {"heavy.example", "light.example"}
    assert 0.75 < firsts.count("heavy.example") / len(firsts) < 0.98
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert ordered[-1].target == "backup.example" and len(ordered) == 3


async def test_resolve_a_literal_and_a_name() -> None:
    addresses, via_srv = await resolve(gateway("ip", "192.0.2.10", 1, port=5070))
    assert (addresses, via_srv) == ([("192.0.2.10", 5070)], False)
    addresses, via_srv = await resolve(Gateway("local", "localhost", 5090))
    assert ("127.0.0.1", 5090) in addresses and not via_srv


async def test_resolve_prefers_srv_for_a_bare_name() -> None:
    async def srv(name: str) -> list[SrvRecord]:
        assert name == "_sip._udp.trunk.example"
        return [SrvRecord(10, 0, 5062, "127.0.0.5"), SrvRecord(20, 0, 5064, "localhost")]

    addresses, via_srv = await resolve(Gateway("srv", "trunk.example", None), srv=srv)
    assert via_srv
    assert addresses[0] == ("127.0.0.5", 5062)
    assert ("127.0.0.1", 5064) in addresses

    async def nothing(name: str) -> list[SrvRecord]:
        return []

    # No SRV record: A/AAAA at the carrier's port (here "localhost" answers from /etc/hosts).
    addresses, via_srv = await resolve(
        Gateway("a", "localhost", None, default_port=5066), srv=nothing
    )
    assert ("127.0.0.1", 5066) in addresses and not via_srv
    # An explicit port means no SRV at all.
    addresses, via_srv = await resolve(Gateway("p", "localhost", 5068), srv=srv)
    assert ("127.0.0.1", 5068) in addresses and not via_srv


def test_owns_configured_hosts_and_the_addresses_they_resolve_to_now() -> None:
    named = gateway("named", "SIP.Named.example", 1, port=None)
    table = GatewayTable([named, gateway("ip", "192.0.2.10", 5)])
    assert table.owns("sip.named.EXAMPLE")  # host names compare without case
    assert table.owns("192.0.2.10")
    assert not table.owns("192.0.2.1")  # not resolved yet
    table.set_resolved(named, [("192.0.2.1", 5060)])
    assert table.owns("192.0.2.1")
    table.set_resolved(named, [("192.0.2.2", 5060)])  # the name moved: the old address is not
    assert table.owns("192.0.2.2")
    assert not table.owns("192.0.2.1")
    table.set_resolved(named, [])  # a failed refresh keeps the last good answer
    assert table.owns("192.0.2.2")
    assert not table.owns("198.51.100.7")
