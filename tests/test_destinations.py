"""core/security/destinations.py on its own: what a Contact may not point at, asked for the
same hosts over and over (its per-host memory must never change an answer)."""

from __future__ import annotations

import pytest

from core.net.identity import ServerIdentity
from core.security import destinations as module
from core.security.destinations import Destinations
from core.settings import ListenAddress
from core.sip.uri import parse_uri


def _destinations() -> Destinations:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5060)])
    return Destinations(identity, lambda host: host == "198.51.100.7")


@pytest.mark.parametrize(
    ("contact", "source", "why"),
    [
        ("sip:a@192.0.2.10:5070", "192.0.2.10", None),
        ("sip:a@127.0.0.1:5070", "127.0.0.1", None),
        ("sip:a@127.0.0.1:5070", "192.0.2.10", "points at this host's loopback from elsewhere"),
        ("sip:a@[::1]:5070", "192.0.2.10", "points at this host's loopback from elsewhere"),
        ("sip:a@LocalHost:5070", "192.0.2.10", "points at this host's loopback from elsewhere"),
        ("sip:a@127.0.0.1", "127.0.0.1", "points at this server"),
        ("sip:a@PBX.test", "192.0.2.10", "points at this server"),
        ("sip:a@0.0.0.0:5070", "192.0.2.10", "is not a unicast address"),
        ("sip:a@[::]:5070", "192.0.2.10", "is not a unicast address"),
        ("sip:a@224.0.0.1:5070", "192.0.2.10", "is not a unicast address"),
        ("sip:a@255.255.255.255:5070", "192.0.2.10", "is not a unicast address"),
        ("sip:a@198.51.100.7", "192.0.2.10", "points at a carrier"),
        ("sip:a@192.0.2.10;maddr=224.0.0.1", "192.0.2.10", "is not a unicast address"),
        # An IPv6 maddr is written in brackets: judged as the address, not as a host name.
        (
            "sip:a@192.0.2.10;maddr=[::1]",
            "192.0.2.10",
            "points at this host's loopback from elsewhere",
        ),
        ("sip:a@192.0.2.10;maddr=[ff02::1]", "192.0.2.10", "is not a unicast address"),
        ("sip:a@192.0.2.10;maddr=[2001:db8::8]", "192.0.2.10", None),
    ],
)
def test_contact_refusal_is_the_same_asked_once_or_many_times(
    contact: str, source: str, why: str | None
) -> None:
    destinations = _destinations()
    uri = parse_uri(contact)
    assert destinations.contact_refusal(uri, source) == why
    assert destinations.contact_refusal(uri, source) == why  # the remembered answer


def test_the_memory_of_hosts_stays_bounded() -> None:
    destinations = _destinations()
    for n in range(module._KIND_CACHE_LIMIT + 10):
        assert destinations.refusal(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 5060) is None
    assert len(destinations._kinds) <= module._KIND_CACHE_LIMIT
    assert destinations.refusal("239.1.2.3", 5060) == "is not a unicast address"


def test_hosts_of_many_phones_are_remembered_and_long_ones_are_not() -> None:
    destinations = _destinations()
    count = 2 * module._KIND_CACHE_LIMIT + 100  # the old policy had just emptied it all
    hosts = [f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(count)]
    for host in hosts:
        assert destinations.refusal(host, 5060) is None
    # Full, the oldest eighth goes: the phones seen last are all still remembered.
    assert all(host in destinations._kinds for host in hosts[-3_500:])
    long_host = "a" * 250 + ".example." + "b" * 10
    for _ in range(2):
        assert destinations.refusal(long_host, 5060) == destinations.refusal("a.example", 5060)
    assert long_host not in destinations._kinds
