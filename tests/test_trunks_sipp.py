"""Carrier trunks with SIPp: the carrier on 127.0.0.2, a stranger on 127.0.0.9.

Inbound, SIPp from the carrier's address calls a DID (tests/sipp/carrier_invite.xml) and
alice's phone, a SIPp UAS registered from its own port, answers. The same INVITE from the
stranger (carrier_stranger.xml) must be challenged and ring nobody, whatever its From claims.
Outbound, alice (call_basic.xml, answering our 407 with her credentials) dials a number;
the carrier's gateway is a SIPp UAS on 127.0.0.2 that challenges (gateway_challenge.xml)
and checks our digest answer with SIPp's verifyauth, or is out of service
(gateway_unavailable.xml) so the call fails over to the next carrier.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.ports import free_port
from support.sipp import SippResult, run_sipp

from core.events import CallEvent, SipTraffic
from core.pbx import Pbx
from core.settings import DialplanSettings
from core.sip.message import Request, Response
from core.sip.parser import parse_message

pytestmark = pytest.mark.sipp

DOMAIN = "pbx.test"
CARRIER_IP = "127.0.0.2"
STRANGER_IP = "127.0.0.9"
TRUNK_KEYS = {"trunk_user": "pbx-trunk", "trunk_password": "trunk-secret-9"}


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    server = await start_pbx(tmp_path, dialplan=DialplanSettings(country_code="44"))
    await server.admin.add_did("01632 960001", "alice")
    try:
        yield server
    finally:
        await server.stop()


def server_of(pbx: Pbx) -> tuple[str, int]:
    bound = pbx.listening[0]
    return bound.host, bound.port


async def register_port(pbx: Pbx, tmp_path: Path, user: str, port: int) -> None:
    """REGISTER `user` from 127.0.0.1:`port`, where its SIPp UAS will answer."""
    host, server_port = server_of(pbx)
    csv = tmp_path / f"reg-{user}.csv"
    password = USERS[user]
    csv.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}]\n")
    result = await run_sipp(
        "uas_register.xml",
        host,
        server_port,
        inf=csv,
        local_port=port,
        keys={"domain": DOMAIN},
        extra=["-auth_uri", DOMAIN],
    )
    assert result.returncode == 0, str(result)


async def wait_until_bound(ip: str, port: int, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((ip, port))
            except OSError:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing bound UDP {ip}:{port}")


async def start_uas(
    pbx: Pbx, scenario: str, ip: str, port: int, keys: dict[str, str] | None = None
) -> asyncio.Task[SippResult]:
    host, server_port = server_of(pbx)
    task = asyncio.create_task(
        run_sipp(scenario, host, server_port, local_ip=ip, local_port=port, keys=keys, timeout=15)
    )
    await wait_until_bound(ip, port)
    return task


async def alice_calls(pbx: Pbx, tmp_path: Path, number: str) -> SippResult:
    host, server_port = server_of(pbx)
    csv = tmp_path / "caller.csv"
    password = USERS["alice"]
    csv.write_text(f"SEQUENTIAL\nalice;[authentication username=alice password={password}]\n")
    return await run_sipp(
        "call_basic.xml",
        host,
        server_port,
        inf=csv,
        local_port=free_port(),
        keys={"domain": DOMAIN, "callee": number},
        extra=["-auth_uri", f"{number}@{DOMAIN}", "-d", "100"],
        timeout=15,
    )


def traffic(pbx: Pbx, direction: str, ip: str, port: int | None = None) -> list[Request | Response]:
    events, _cursor, _missed = pbx.bus.traffic.read_since(0)
    return [
        parse_message(event.data)
        for event in events
        if isinstance(event, SipTraffic)
        and event.direction == direction
        and event.remote[0] == ip
        and (port is None or event.remote[1] == port)
    ]


def call_states(pbx: Pbx) -> list[str]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return [event.state for event in events if isinstance(event, CallEvent)]


async def test_carrier_invite_to_a_did_rings_the_user(pbx: Pbx, tmp_path: Path) -> None:
    await pbx.admin.add_carrier("acme", [f"{CARRIER_IP}/32"])
    alice_port = free_port()
    await register_port(pbx, tmp_path, "alice", alice_port)
    phone = await start_uas(pbx, "uas_answer.xml", "127.0.0.1", alice_port)
    host, server_port = server_of(pbx)
    result = await run_sipp(
        "carrier_invite.xml",
        host,
        server_port,
        local_ip=CARRIER_IP,
        keys={"did": "+441632960001", "from_user": "+442079460000", "from_host": "carrier.example"},
        extra=["-d", "100"],
        timeout=15,
    )
    phone_result = await phone
    assert result.returncode == 0, str(result)
    assert phone_result.returncode == 0, str(phone_result)
    to_carrier = [m for m in traffic(pbx, "out", CARRIER_IP) if isinstance(m, Response)]
    assert 407 not in [response.status for response in to_carrier]
    assert call_states(pbx) == ["trying", "ringing", "answered", "ended"]
    await pbx.store.flush()
    [cdr] = await pbx.store.list_cdrs()
    assert (cdr.callee, cdr.direction, cdr.source_ip) == ("alice", "inbound", CARRIER_IP)


@pytest.mark.parametrize("from_host", ["carrier.example", CARRIER_IP])
async def test_stranger_is_challenged_and_rings_nobody(
    pbx: Pbx, tmp_path: Path, from_host: str
) -> None:
    await pbx.admin.add_carrier("acme", [f"{CARRIER_IP}/32"])
    alice_port = free_port()
    await register_port(pbx, tmp_path, "alice", alice_port)
    host, server_port = server_of(pbx)
    result = await run_sipp(
        "carrier_stranger.xml",
        host,
        server_port,
        local_ip=STRANGER_IP,
        keys={"did": "+441632960001", "from_user": "+442079460000", "from_host": from_host},
        timeout=10,
    )
    assert result.returncode == 0, str(result)
    to_alice = [m for m in traffic(pbx, "out", "127.0.0.1", alice_port) if isinstance(m, Request)]
    assert [request.method for request in to_alice] == []
    assert call_states(pbx) == []


async def grant_outbound(pbx: Pbx) -> None:
    await pbx.admin.update_user("alice", outbound_policy="national", caller_id="+441632960100")


async def test_outbound_call_authenticates_to_the_gateway(pbx: Pbx, tmp_path: Path) -> None:
    await grant_outbound(pbx)
    gateway_port = free_port(CARRIER_IP)
    await pbx.admin.add_carrier(
        "acme",
        [f"{CARRIER_IP}/32"],
        gateway=f"{CARRIER_IP}:{gateway_port}",
        username=TRUNK_KEYS["trunk_user"],
        password=TRUNK_KEYS["trunk_password"],
    )
    gateway = await start_uas(pbx, "gateway_challenge.xml", CARRIER_IP, gateway_port, TRUNK_KEYS)
    result = await alice_calls(pbx, tmp_path, "01632960555")
    gateway_result = await gateway
    assert result.returncode == 0, str(result)
    assert gateway_result.returncode == 0, str(gateway_result)
    invites = [
        m
        for m in traffic(pbx, "out", CARRIER_IP, gateway_port)
        if getattr(m, "method", "") == "INVITE"
    ]
    assert len(invites) == 2
    assert invites[0].headers.get("authorization") is None
    assert 'realm="carrier.example"' in (invites[1].headers.get("authorization") or "")
    assert invites[1].from_addr is not None and invites[1].from_addr.uri.user == "+441632960100"
    assert call_states(pbx) == ["trying", "ringing", "answered", "ended"]
    await pbx.store.flush()
    [cdr] = await pbx.store.list_cdrs()
    assert (cdr.caller, cdr.callee, cdr.direction) == ("alice", "+441632960555", "outbound")


async def test_failover_to_the_second_carrier_on_503(pbx: Pbx, tmp_path: Path) -> None:
    await grant_outbound(pbx)
    down_port, up_port = free_port(CARRIER_IP), free_port(CARRIER_IP)
    await pbx.admin.add_carrier(
        "down", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{down_port}", priority=1
    )
    await pbx.admin.add_carrier(
        "up",
        [f"{CARRIER_IP}/32"],
        gateway=f"{CARRIER_IP}:{up_port}",
        username=TRUNK_KEYS["trunk_user"],
        password=TRUNK_KEYS["trunk_password"],
        priority=2,
    )
    down = await start_uas(pbx, "gateway_unavailable.xml", CARRIER_IP, down_port)
    up = await start_uas(pbx, "gateway_challenge.xml", CARRIER_IP, up_port, TRUNK_KEYS)
    result = await alice_calls(pbx, tmp_path, "+441632960555")
    down_result, up_result = await down, await up
    assert result.returncode == 0, str(result)
    assert down_result.returncode == 0, str(down_result)
    assert up_result.returncode == 0, str(up_result)
    assert call_states(pbx) == ["trying", "ringing", "answered", "ended"]
