"""What `user add` and the credentials screen tell a phone (core/provisioning.py): the server
they name must be one the route accepts as its own, whatever the listeners look like."""

from __future__ import annotations

import pytest

from core.net.identity import ServerIdentity
from core.provisioning import phone_settings
from core.settings import ListenAddress
from core.sip.uri import parse_uri


@pytest.mark.parametrize(
    "listen",
    [
        (ListenAddress("udp", "0.0.0.0", 5060), ListenAddress("tcp", "0.0.0.0", 5060)),
        (ListenAddress("udp", "127.0.0.1", 5070),),
        (ListenAddress("udp", "10.0.0.5", 5060, advertise_host="203.0.113.10"),),
        (ListenAddress("tcp", "::", 5061, advertise_host="2001:db8::10", advertise_port=15061),),
    ],
)
def test_the_printed_server_is_one_the_route_accepts(listen: tuple[ListenAddress, ...]) -> None:
    account = phone_settings("alice", "pw", "pbx.local", listen)
    identity = ServerIdentity("pbx.local", listen)
    rows = dict(account.rows())
    port = rows["Port"].split()[0]
    assert identity.is_us(parse_uri(f"sip:alice@{account.server}"))
    assert identity.is_us(parse_uri(f"sip:alice@{account.server}:{port}"))
    assert rows["Outbound proxy"] == "none" and rows["Realm"].startswith("pbx.local ")


def test_rows_group_transports_by_port() -> None:
    listen = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5080),
    )
    rows = dict(phone_settings("bob", "pw", "pbx.test", listen).rows())
    assert rows["Port"] == "5060 (UDP or TCP), 5080 (TCP)"
    assert rows["Transport"] == "UDP or TCP"
    assert phone_settings("bob", "pw", "pbx.test", listen).server == "127.0.0.1"
