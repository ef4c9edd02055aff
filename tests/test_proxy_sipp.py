"""Calls through the proxy end to end: SIPp callers and callees over 127.0.0.1.

Each callee is a SIPp UAS on a port of its own, registered first by `uas_register.xml` from
that same port, so its Contact and its source address agree (no NAT). The caller is a SIPp UAC
that answers the 407 with digest credentials from an injection file.

Two SIPp limits shape the set-up: SIPp answers only MD5 challenges (the server here offers
MD5 alone), and it does not expand [fieldN] inside its [authentication] keyword (the injection
file holds the whole keyword; `-auth_uri` gives the digest URI).
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
from core.settings import AuthSettings
from core.sip.message import Response
from core.sip.parser import parse_message

pytestmark = pytest.mark.sipp

DOMAIN = "pbx.test"


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    """The shared set-up (users alice, bob, carol), offering MD5 only for SIPp's sake."""
    server = await start_pbx(tmp_path, auth=AuthSettings(algorithms=("MD5",)))
    try:
        yield server
    finally:
        await server.stop()


def server_of(pbx: Pbx) -> tuple[str, int]:
    bound = pbx.listening[0]
    return bound.host, bound.port


def credentials_csv(path: Path, user: str, password: str) -> Path:
    """field0 = user, field1 = SIPp's whole [authentication] keyword."""
    path.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}]\n")
    return path


async def register_port(pbx: Pbx, tmp_path: Path, user: str, port: int) -> None:
    """REGISTER `user` from 127.0.0.1:`port`, the port its SIPp UAS will then answer on."""
    host, server_port = server_of(pbx)
    csv = credentials_csv(tmp_path / f"reg-{user}-{port}.csv", user, USERS[user])
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
    ports = [binding.flow.port for binding in pbx.location.lookup(user, pbx.clock())]
    assert port in ports


async def wait_until_bound(port: int, timeout: float = 5.0) -> None:
    """Until something (the SIPp UAS) holds UDP `port` on 127.0.0.1."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing bound UDP port {port}")


async def start_callee(
    pbx: Pbx, scenario: str, port: int, pause_ms: int = 0
) -> asyncio.Task[SippResult]:
    host, server_port = server_of(pbx)
    task = asyncio.create_task(
        run_sipp(
            scenario, host, server_port, local_port=port, extra=["-d", str(pause_ms)], timeout=15
        )
    )
    await wait_until_bound(port)
    return task


async def call(
    pbx: Pbx,
    tmp_path: Path,
    scenario: str,
    *,
    port: int,
    callee: str = "bob",
    password: str = USERS["alice"],
    pause_ms: int = 100,
    transport: str = "udp",
) -> SippResult:
    host, server_port = server_of(pbx)
    csv = credentials_csv(tmp_path / "caller.csv", "alice", password)
    return await run_sipp(
        scenario,
        host,
        server_port,
        transport=transport,
        inf=csv,
        local_port=port,
        keys={"domain": DOMAIN, "callee": callee},
        extra=["-auth_uri", f"{callee}@{DOMAIN}", "-d", str(pause_ms)],
        timeout=15,
    )


def call_events(pbx: Pbx) -> list[CallEvent]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return [event for event in events if isinstance(event, CallEvent)]


def invite_answers(pbx: Pbx, port: int) -> list[int]:
    """Final statuses the server sent to 127.0.0.1:`port` for INVITEs, in order."""
    events, _cursor, _missed = pbx.bus.traffic.read_since(0)
    statuses = []
    for event in events:
        if not isinstance(event, SipTraffic) or event.direction != "out":
            continue
        if event.remote[1] != port or not event.data.startswith(b"SIP/2.0"):
            continue
        message = parse_message(event.data, stream=event.transport == "tcp")
        assert isinstance(message, Response)
        cseq = message.cseq
        if cseq is not None and cseq.method == "INVITE" and message.status >= 200:
            statuses.append(message.status)
    return statuses


def requests_sent_to(pbx: Pbx, port: int, method: str) -> list[bytes]:
    events, _cursor, _missed = pbx.bus.traffic.read_since(0)
    return [
        event.data
        for event in events
        if isinstance(event, SipTraffic)
        and event.direction == "out"
        and event.remote[1] == port
        and event.data.startswith(method.encode() + b" ")
    ]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_that_the_caller_hangs_up(pbx: Pbx, tmp_path: Path, transport: str) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_answer.xml", callee_port)
    result = await call(pbx, tmp_path, "call_basic.xml", port=caller_port, transport=transport)
    callee_result = await callee
    assert result.returncode == 0, str(result)
    assert callee_result.returncode == 0, str(callee_result)

    events = call_events(pbx)
    assert [event.state for event in events] == ["trying", "ringing", "answered", "ended"]
    assert {(event.caller, event.callee) for event in events} == {("alice", "bob")}
    assert events[-1].reason == "caller hung up"
    assert pbx.calls() == [] and pbx.stats().calls_up == 0

    # The INVITE reached the callee with our Record-Route: twice when the caller is on TCP
    # (one entry per transport), once when both sides use UDP.
    invite = requests_sent_to(pbx, callee_port, "INVITE")[0].decode()
    record_routes = [line for line in invite.split("\r\n") if line.startswith("Record-Route:")]
    assert len(record_routes) == (2 if transport == "tcp" else 1)
    assert ";lr" in record_routes[0] and "transport=tcp" not in record_routes[0]
    if transport == "tcp":
        assert "transport=tcp" in record_routes[1]
    assert "Max-Forwards: 69" in invite
    assert "Proxy-Authorization" not in invite

    await pbx.store.flush()
    [cdr] = await pbx.store.list_cdrs()
    assert (cdr.caller, cdr.callee, cdr.status, cdr.direction) == ("alice", "bob", 200, "internal")
    assert cdr.answered_at is not None and cdr.ended_at is not None
    assert cdr.duration >= 0.09  # the caller held the call 100 ms
    assert cdr.source_ip == "127.0.0.1" and cdr.reason == "caller hung up"


async def test_call_that_the_callee_hangs_up(pbx: Pbx, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_hangup.xml", callee_port, pause_ms=100)
    result = await call(pbx, tmp_path, "call_wait_bye.xml", port=caller_port)
    callee_result = await callee
    assert result.returncode == 0, str(result)
    assert callee_result.returncode == 0, str(callee_result)
    events = call_events(pbx)
    assert [event.state for event in events] == ["trying", "ringing", "answered", "ended"]
    assert events[-1].reason == "callee hung up"
    # The BYE reached the caller with our Route entry consumed, sent by us from our address.
    [bye] = requests_sent_to(pbx, caller_port, "BYE")
    assert b"\r\nRoute:" not in bye


async def test_cancel_while_ringing(pbx: Pbx, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_ring.xml", callee_port)
    result = await call(pbx, tmp_path, "call_cancel.xml", port=caller_port, pause_ms=100)
    callee_result = await callee
    assert result.returncode == 0, str(result)
    assert callee_result.returncode == 0, str(callee_result)
    assert invite_answers(pbx, caller_port) == [407, 487]
    events = call_events(pbx)
    assert [event.state for event in events] == ["trying", "ringing", "failed"]
    assert (events[-1].status, events[-1].reason) == (487, "cancelled by caller")
    assert len(requests_sent_to(pbx, callee_port, "CANCEL")) == 1


async def test_busy_callee(pbx: Pbx, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_busy.xml", callee_port)
    result = await call(pbx, tmp_path, "call_rejected.xml", port=caller_port)
    callee_result = await callee
    assert result.returncode == 0, str(result)
    assert callee_result.returncode == 0, str(callee_result)
    assert invite_answers(pbx, caller_port) == [407, 486]
    events = call_events(pbx)
    assert [(event.state, event.status) for event in events] == [("trying", 0), ("failed", 486)]
    # The ACK of the 486 is hop by hop: ours to the callee, the caller's absorbed here.
    assert len(requests_sent_to(pbx, callee_port, "ACK")) == 1
    await pbx.store.flush()
    [cdr] = await pbx.store.list_cdrs()
    assert (cdr.status, cdr.answered_at, cdr.duration) == (486, None, 0.0)


@pytest.mark.parametrize(("callee", "status"), [("carol", 480), ("nobody", 404)])
async def test_callee_offline_or_unknown(
    pbx: Pbx, tmp_path: Path, callee: str, status: int
) -> None:
    caller_port = free_port()
    result = await call(pbx, tmp_path, "call_rejected.xml", port=caller_port, callee=callee)
    assert result.returncode == 0, str(result)
    assert invite_answers(pbx, caller_port) == [407, status]
    assert call_events(pbx) == []


async def test_wrong_caller_password_is_challenged_again(pbx: Pbx, tmp_path: Path) -> None:
    caller_port = free_port()
    result = await call(
        pbx, tmp_path, "call_wrong_password.xml", port=caller_port, password="not-alices"
    )
    assert result.returncode == 0, str(result)
    assert invite_answers(pbx, caller_port) == [407, 407]
    assert call_events(pbx) == []


async def test_two_contacts_ring_and_the_first_answer_wins(pbx: Pbx, tmp_path: Path) -> None:
    answering_port, ringing_port, caller_port = free_port(), free_port(), free_port()
    await register_port(pbx, tmp_path, "bob", answering_port)
    await register_port(pbx, tmp_path, "bob", ringing_port)
    ringing = await start_callee(pbx, "uas_ring.xml", ringing_port)
    # The answering phone rings 300 ms before it picks up, so both are ringing by then.
    answering = await start_callee(pbx, "uas_answer.xml", answering_port, pause_ms=300)
    result = await call(pbx, tmp_path, "call_basic.xml", port=caller_port)
    answering_result, ringing_result = await answering, await ringing
    assert result.returncode == 0, str(result)
    assert answering_result.returncode == 0, str(answering_result)
    assert ringing_result.returncode == 0, str(ringing_result)
    assert len(requests_sent_to(pbx, ringing_port, "INVITE")) == 1
    assert len(requests_sent_to(pbx, ringing_port, "CANCEL")) == 1
    assert requests_sent_to(pbx, ringing_port, "BYE") == []
    assert len(requests_sent_to(pbx, answering_port, "BYE")) == 1
    assert [event.state for event in call_events(pbx)] == [
        "trying",
        "ringing",
        "answered",
        "ended",
    ]


async def test_reinvite_during_the_call(pbx: Pbx, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_reinvite.xml", callee_port)
    result = await call(pbx, tmp_path, "call_reinvite.xml", port=caller_port)
    callee_result = await callee
    assert result.returncode == 0, str(result)
    assert callee_result.returncode == 0, str(callee_result)
    invites = requests_sent_to(pbx, callee_port, "INVITE")
    assert len(invites) == 2 and b"PCMA" in invites[1]
    assert [event.state for event in call_events(pbx)] == [
        "trying",
        "ringing",
        "answered",
        "ended",
    ]
