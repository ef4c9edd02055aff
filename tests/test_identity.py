"""Who we are on the wire: the address our Via and Record-Route name."""

from __future__ import annotations

from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.settings import ListenAddress
from core.sip.uri import parse_uri


def test_wildcard_listen_advertises_a_reachable_address() -> None:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "0.0.0.0", 5060)])
    flow = Flow("udp", ("127.0.0.5", 40000), ("0.0.0.0", 5060))
    assert identity.hostport(flow) == "127.0.0.1:5060"


def test_specific_listen_advertises_itself() -> None:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5070)])
    flow = Flow("udp", ("127.0.0.5", 40000), ("127.0.0.1", 5070))
    assert identity.hostport(flow) == "127.0.0.1:5070"


def test_ipv6_wildcard_advertises_a_bracketed_address() -> None:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "::", 5060)])
    flow = Flow("udp", ("::1", 40000), ("::", 5060))
    assert identity.hostport(flow) == "[::1]:5060"


def test_is_us_by_domain_address_and_port() -> None:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5070)])
    assert identity.is_us(parse_uri("sip:PBX.test"))
    assert identity.is_us(parse_uri("sip:127.0.0.1:5070"))
    assert not identity.is_us(parse_uri("sip:127.0.0.1:5071"))
    assert not identity.is_us(parse_uri("sip:other.test"))
    assert not identity.is_us(parse_uri("tel:+15551234"))
