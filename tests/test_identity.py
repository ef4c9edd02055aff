"""Who we are on the wire: the address our Via and Record-Route name."""

from __future__ import annotations

import socket

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


def test_an_advertised_address_goes_in_via_and_is_us() -> None:
    listen = ListenAddress("udp", "10.0.0.5", 5060, advertise_host="203.0.113.10")
    identity = ServerIdentity("pbx.test", [listen])
    flow = Flow("udp", ("198.51.100.7", 40000), ("10.0.0.5", 5060))
    assert identity.hostport(flow) == "203.0.113.10:5060"
    assert identity.is_us(parse_uri("sip:203.0.113.10"))
    assert identity.is_us(parse_uri("sip:203.0.113.10:5060"))
    assert identity.is_own_address("203.0.113.10", 5060)
    assert not identity.is_us(parse_uri("sip:203.0.113.11"))


def test_an_advertised_port_and_name_behind_a_wildcard_listener() -> None:
    listen = ListenAddress("tcp", "0.0.0.0", 5060, "sip.example.com", 15060)
    identity = ServerIdentity("pbx.test", [listen])
    flow = Flow("tcp", ("198.51.100.7", 40000), ("10.0.0.5", 5060), connection_id=3)
    assert identity.hostport(flow) == "sip.example.com:15060"
    assert identity.is_us(parse_uri("sip:SIP.example.com"))
    # Another transport on the same port is another listener, without the advertisement.
    udp = Flow("udp", ("127.0.0.5", 40000), ("127.0.0.1", 5060))
    assert identity.hostport(udp) == "127.0.0.1:5060"


def test_a_wildcard_listener_is_every_local_address_as_kamailios_myself() -> None:
    identity = ServerIdentity("pbx.local", [ListenAddress("udp", "0.0.0.0", 5060)])
    # Every 127/8 address is this host's: one the interface list never named is still us.
    assert identity.is_us(parse_uri("sip:127.0.0.77"))
    assert identity.is_us(parse_uri("sip:127.0.0.77:5060"))
    assert not identity.is_us(parse_uri("sip:127.0.0.77:5070"))
    assert not identity.is_us(parse_uri("sip:192.0.2.200"))  # TEST-NET-1: not ours
    assert identity.is_us(parse_uri(f"sip:{socket.gethostname()}"))


def test_a_specific_listener_is_only_its_own_address() -> None:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5070)])
    assert not identity.is_us(parse_uri("sip:127.0.0.77"))
    assert not identity.is_us(parse_uri("sip:garbage.example"))


def test_probing_many_foreign_addresses_stays_bounded() -> None:
    # A peer can name any address in a Request-URI: each costs one bind() probe at most,
    # and the answers kept are capped.
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "0.0.0.0", 5060)])
    for n in range(5_000):
        assert not identity.is_us(parse_uri(f"sip:10.255.{n // 256}.{n % 256}"))
    assert len(identity._local_cache) <= 4_096
    assert identity.is_us(parse_uri("sip:127.0.0.77"))  # still answers correctly


def _hostport_uncached(identity: ServerIdentity, flow: Flow) -> str:
    """What hostport answered before it kept answers: worked out from the listeners."""
    listener = identity.listener_for(flow)
    if listener is not None and listener.advertise_host:
        return listener.advertised
    host = flow.local[0]
    if host in ("0.0.0.0", "::"):
        host = identity.source_address_towards(flow.remote[0])
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{flow.local[1]}"


def test_kept_hostports_answer_as_working_them_out_each_time() -> None:
    listens = [
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060, advertise_host="sip.example.com"),
        ListenAddress("tls", "0.0.0.0", 5061, "203.0.113.10", 15061),
        ListenAddress("udp", "0.0.0.0", 5070),
        ListenAddress("udp", "::", 5060),
        ListenAddress("udp", "10.0.0.5", 5080, advertise_host="2001:db8::5"),
    ]
    locals_ = [
        ("127.0.0.1", 5060),
        ("0.0.0.0", 5061),
        ("0.0.0.0", 5070),
        ("::", 5060),
        ("10.0.0.5", 5080),
        ("127.0.0.2", 5090),  # no listener at all
    ]
    remotes = [("127.0.0.5", 40000), ("127.0.0.9", 5060), ("::1", 5062)]
    identity = ServerIdentity("pbx.test", listens)
    fresh = ServerIdentity("pbx.test", listens)
    for _ in range(2):  # the second pass answers from what the first one kept
        for transport in ("udp", "tcp", "tls"):
            for local in locals_:
                for remote in remotes:
                    flow = Flow(transport, remote, local)
                    expected = _hostport_uncached(fresh, flow)
                    assert identity.hostport(flow) == expected, (transport, local, remote)
    # A flow on a wildcard socket without an advertisement depends on its peer: only that
    # is kept ("").
    peer_decides = {key for key, value in identity._hostports.items() if not value}
    assert peer_decides == {
        (transport, host, port)
        for transport in ("udp", "tcp", "tls")
        for host, port in locals_
        if host in ("0.0.0.0", "::") and (transport, port) != ("tls", 5061)
    }


def test_kept_hostports_are_forgotten_when_the_listeners_change() -> None:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5060)])
    flow = Flow("udp", ("127.0.0.5", 40000), ("127.0.0.1", 5060))
    assert identity.hostport(flow) == "127.0.0.1:5060"
    identity.bind([ListenAddress("udp", "127.0.0.1", 5060, advertise_host="sip.example.com")])
    assert identity.hostport(flow) == "sip.example.com:5060"
