"""Reflection, replay, crashes and resource caps, attacked over real loopback sockets.

Each test sends the attack a hostile peer would send and has a listener play the victim:
the victim's socket must stay silent, the attacker's own socket gets the answer (or
nothing), and the server keeps serving. Attackers bind 127.0.0.5 and friends; 127.0.0.1
is the server's own, exempt address (tests/test_security_wire.py explains).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import UdpClient, request_text

from core.events import SecurityEvent
from core.pbx import Pbx
from core.settings import AuthSettings, SecuritySettings, TransportSettings
from core.sip.message import Response

ATTACKER = "127.0.0.5"
VICTIM = "127.0.0.7"
CARRIER = "127.0.0.8"
ALICE = "<sip:alice@pbx.test>"


def _address(pbx: Pbx) -> tuple[str, int]:
    return pbx.listening[0].host, pbx.listening[0].port


@asynccontextmanager
async def _victim(port: int = 0) -> AsyncIterator[UdpClient]:
    """A UDP socket on VICTIM that must receive nothing."""
    victim = UdpClient(("127.0.0.1", 9))
    loop = asyncio.get_running_loop()
    victim.transport, _ = await loop.create_datagram_endpoint(
        lambda: victim.receiver, local_addr=(VICTIM, port)
    )
    victim.local = victim.transport.get_extra_info("sockname")[:2]
    try:
        yield victim
    finally:
        victim.close()


@asynccontextmanager
async def _attacker(pbx: Pbx, ip: str = ATTACKER) -> AsyncIterator[UdpClient]:
    client = await UdpClient(_address(pbx)).open(ip)
    try:
        yield client
    finally:
        client.close()


def _via(text: str, via: str) -> str:
    return re.sub(r"^Via: [^\r]*", f"Via: {via}", text, count=1, flags=re.M)


async def _silent(victim: UdpClient, wait: float = 0.3) -> None:
    data = await victim.recv(wait)
    assert data is None, f"the victim received: {data[:80]!r}"


# -- reflection: answers go where the request came from -----------------------------------


async def test_a_400_is_not_reflected_to_the_host_a_via_names(tmp_path: Path) -> None:
    """A request broken on purpose, whose Via names a victim: the 400 never reaches it."""
    pbx = await start_pbx(tmp_path)
    try:
        async with _victim() as victim, _attacker(pbx) as attacker:
            text = request_text("OPTIONS", "sip:pbx.test", local=attacker.local)
            text = text.replace("CSeq: 1 OPTIONS", "CSeq: 1 BYE")  # sanity: Bad CSeq method
            text = _via(text, f"SIP/2.0/UDP {VICTIM}:{victim.local[1]};branch=z9hG4bKrefl1")
            answered = pbx.core.outbox.answered_locally
            attacker.send(text)
            # A probe after it: once the probe is answered, the 400 was sent (in order).
            probe = await attacker.ask(
                request_text("OPTIONS", "sip:pbx.test", local=attacker.local)
            )
            assert probe is not None and probe.status == 200
            assert pbx.core.outbox.answered_locally == answered + 2
            await _silent(victim)
    finally:
        await pbx.stop()


async def test_no_rport_still_goes_to_the_source_ip_not_the_via_host(tmp_path: Path) -> None:
    """Without rport the sent-by port is used (§18.2.2), but on the source's address."""
    pbx = await start_pbx(tmp_path)
    try:
        async with _attacker(pbx) as attacker:
            port = attacker.local[1]
            async with _victim(port) as victim_same_port:
                text = request_text("OPTIONS", "sip:pbx.test", local=attacker.local)
                text = text.replace("Max-Forwards: 70", "Max-Forwards: 0")  # → 483
                text = _via(text, f"SIP/2.0/UDP {VICTIM}:{port};branch=z9hG4bKrefl2")
                response = await attacker.ask(text)
                assert response is not None and response.status == 483
                await _silent(victim_same_port)
    finally:
        await pbx.stop()


async def test_a_clients_own_received_is_overwritten(tmp_path: Path) -> None:
    """`received=` is the server's to set: a client's own value must not steer the 200."""
    pbx = await start_pbx(tmp_path)
    try:
        async with _attacker(pbx) as attacker:
            port = attacker.local[1]
            async with _victim(port) as victim:
                text = request_text("OPTIONS", "sip:pbx.test", local=attacker.local)
                text = _via(
                    text, f"SIP/2.0/UDP {ATTACKER}:{port};received={VICTIM};branch=z9hG4bKrefl3"
                )
                response = await attacker.ask(text)
                assert response is not None and response.status == 200
                top = response.top_via
                assert top is not None and top.received in (None, ATTACKER)
                await _silent(victim)
    finally:
        await pbx.stop()


async def test_a_via_host_that_does_not_resolve_still_gets_its_answer(tmp_path: Path) -> None:
    """A 483 to a request whose Via names an unresolvable host reaches the sender at once
    (no DNS is asked on the event loop)."""
    pbx = await start_pbx(tmp_path)
    try:
        async with _attacker(pbx) as attacker:
            text = request_text("OPTIONS", "sip:pbx.test", local=attacker.local)
            text = text.replace("Max-Forwards: 70", "Max-Forwards: 0")
            text = _via(
                text, f"SIP/2.0/UDP no-such-host.invalid:{attacker.local[1]};branch=z9hG4bKr4"
            )
            response = await attacker.ask(text, timeout=1.0)
            assert response is not None and response.status == 483
    finally:
        await pbx.stop()


def test_own_address_towards_a_host_name_asks_no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect() to a name resolves it, blocking: the probe socket must never get one."""
    from core.net.identity import ServerIdentity
    from core.settings import ListenAddress

    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "0.0.0.0", 5060)])
    connected: list[str] = []

    class Recording(socket.socket):
        def connect(self, address: object) -> None:
            assert isinstance(address, tuple)
            connected.append(address[0])
            super().connect(address)

    monkeypatch.setattr(socket, "socket", Recording)
    assert identity.source_address_towards("phone.example.com")
    assert "phone.example.com" not in connected


async def test_a_cached_reply_is_not_handed_to_a_third_party(tmp_path: Path) -> None:
    """Replaying a phone's request (its branch and Via) from elsewhere must not make the
    server resend the phone's cached answer to the phone."""
    pbx = await start_pbx(tmp_path)
    try:
        async with _attacker(pbx, VICTIM) as phone, _attacker(pbx) as attacker:
            text = request_text("OPTIONS", "sip:pbx.test", local=phone.local)
            text = text.replace(";rport", "")  # answered to the sent-by address
            first = await phone.ask(text)
            assert first is not None and first.status == 200
            sent = pbx.transport.sent_messages
            attacker.send(text)  # the same bytes, from elsewhere
            probe = await attacker.ask(
                request_text("OPTIONS", "sip:pbx.test", local=attacker.local)
            )
            assert probe is not None and pbx.transport.sent_messages == sent + 2
            await _silent(phone)
    finally:
        await pbx.stop()


# -- carriers: never banned by a heuristic --------------------------------------------------


async def test_scanner_display_names_from_a_carrier_do_not_ban_it(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        await pbx.admin.add_carrier("acme", [f"{CARRIER}/32"])
        async with _attacker(pbx, CARRIER) as carrier:
            for _ in range(5):  # past scanner_ban_after (3)
                text = request_text("INVITE", "sip:+441632960999@pbx.test", local=carrier.local)
                text = text.replace("From: <", 'From: "friendly-scanner" <', 1)
                response = await carrier.ask(text)
                assert response is not None, "a carrier's call was dropped as a scanner"
            assert [ban.ip for ban in pbx.security.bans(pbx.clock())] == []
            probe = await carrier.ask(request_text("OPTIONS", "sip:pbx.test", local=carrier.local))
            assert probe is not None and probe.status == 200
    finally:
        await pbx.stop()


async def test_a_source_that_logged_in_is_not_banned_for_one_scanner_like_softphone(
    tmp_path: Path,
) -> None:
    """A NATed office: one address, phones that authenticate, one softphone whose
    User-Agent matches a scanner. Its requests are dropped; the office is not banned."""
    pbx = await start_pbx(tmp_path, auth=AuthSettings(algorithms=("MD5",)))
    try:
        async with _attacker(pbx, "127.0.0.6") as office:
            call_id = secrets.token_hex(6)
            challenge = await _challenge(office, call_id)
            text = request_text(
                "REGISTER",
                "sip:pbx.test",
                local=office.local,
                call_id=call_id,
                cseq=2,
                to=ALICE,
                extra=_answer(challenge, "REGISTER", "sip:pbx.test", qop="auth"),
            )
            assert (await office.ask(text)).status == 200  # type: ignore[union-attr]
            for _ in range(5):  # past scanner_ban_after (3)
                office.send(
                    request_text(
                        "OPTIONS", "sip:pbx.test", local=office.local, user_agent="sipvicious"
                    )
                )
            probe = await office.ask(request_text("OPTIONS", "sip:pbx.test", local=office.local))
            assert probe is not None and probe.status == 200
            assert pbx.security.bans(pbx.clock()) == []
            assert pbx.security.stats.scanner_drops == 5
            # Reported, but not in a form the fail2ban filter counts towards a ban.
            events, _cursor, _missed = pbx.bus.feed.read_since(0)
            actions = {e.action for e in events if isinstance(e, SecurityEvent)}
            assert "scanner-dropped-known" in actions and "scanner-dropped" not in actions
    finally:
        await pbx.stop()


# -- digest: odd but legal answers, replays ------------------------------------------------


def _answer(
    challenge: Response, method: str, uri: str, *, qop: str | None, nc: str = "00000001"
) -> str:
    """An MD5 Authorization for alice, with `qop` spelled as given (or none)."""
    header = challenge.headers.get("www-authenticate") or ""
    nonce = re.search(r'nonce="([^"]+)"', header)
    assert nonce is not None
    ha1 = hashlib.md5(f"alice:pbx.test:{USERS['alice']}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce = secrets.token_hex(4)
    if qop is None:
        digest = hashlib.md5(f"{ha1}:{nonce.group(1)}:{ha2}".encode()).hexdigest()
        tail = ""
    else:
        digest = hashlib.md5(
            f"{ha1}:{nonce.group(1)}:{nc}:{cnonce}:{qop.lower()}:{ha2}".encode()
        ).hexdigest()
        tail = f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    return (
        f'Authorization: Digest username="alice", realm="pbx.test", nonce="{nonce.group(1)}", '
        f'uri="{uri}", response="{digest}", algorithm=MD5{tail}\r\n'
    )


async def _challenge(client: UdpClient, call_id: str) -> Response:
    first = await client.ask(
        request_text("REGISTER", "sip:pbx.test", local=client.local, call_id=call_id, to=ALICE)
    )
    assert first is not None and first.status == 401
    return first


async def test_uppercase_qop_gets_a_final_answer_and_no_fault(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path, auth=AuthSettings(algorithms=("MD5",)))
    try:
        async with _attacker(pbx) as client:
            call_id = secrets.token_hex(6)
            challenge = await _challenge(client, call_id)
            text = request_text(
                "REGISTER",
                "sip:pbx.test",
                local=client.local,
                call_id=call_id,
                cseq=2,
                to=ALICE,
                extra=_answer(challenge, "REGISTER", "sip:pbx.test", qop="AUTH"),
            )
            response = await client.ask(text)
            assert response is not None and response.status == 200
            assert pbx.faults.total == 0
    finally:
        await pbx.stop()


async def test_a_qop_less_answer_is_refused_and_cannot_be_replayed(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path, auth=AuthSettings(algorithms=("MD5",)))
    try:
        async with _attacker(pbx) as client:
            call_id = secrets.token_hex(6)
            challenge = await _challenge(client, call_id)
            auth = _answer(challenge, "REGISTER", "sip:pbx.test", qop=None)
            text = request_text(
                "REGISTER",
                "sip:pbx.test",
                local=client.local,
                call_id=call_id,
                extra=auth,
                to=ALICE,
            )
            response = await client.ask(text)
            assert response is not None and response.status == 401
            assert pbx.location.contact_count == 0
    finally:
        await pbx.stop()


async def test_old_phone_switch_makes_a_qop_less_nonce_single_use(tmp_path: Path) -> None:
    auth = AuthSettings(algorithms=("MD5",), allow_digest_without_qop=True)
    pbx = await start_pbx(tmp_path, auth=auth)
    try:
        async with _attacker(pbx) as client:
            call_id = secrets.token_hex(6)
            challenge = await _challenge(client, call_id)
            header = _answer(challenge, "REGISTER", "sip:pbx.test", qop=None)
            statuses = []
            for cseq in (2, 3):  # the capture replayed, as a new transaction
                text = request_text(
                    "REGISTER",
                    "sip:pbx.test",
                    local=client.local,
                    call_id=call_id,
                    cseq=cseq,
                    to=ALICE,
                    extra=header,
                )
                response = await client.ask(text)
                assert response is not None
                statuses.append(response.status)
            assert statuses == [200, 401]
    finally:
        await pbx.stop()


# -- resource caps -------------------------------------------------------------------------


async def _closed(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(100), timeout)
    except (ConnectionError, TimeoutError):
        return True  # reset, or still open and silent: distinguished by the caller's timeout
    return data == b""


async def test_tcp_connections_per_source_are_capped(tmp_path: Path) -> None:
    transport = replace(TransportSettings(), max_tcp_connections_per_source=4)
    pbx = await start_pbx(tmp_path, transport=transport)
    try:
        host, port = _address(pbx)
        streams = []
        for _ in range(6):
            streams.append(await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0)))
        await asyncio.sleep(0.2)
        assert pbx.transport.connection_count == 4
        assert pbx.transport.refused_connections == 2
        # Another source is not affected.
        _reader, other = await asyncio.open_connection(host, port, local_addr=(VICTIM, 0))
        await asyncio.sleep(0.1)
        assert pbx.transport.connection_count == 5
        other.close()
        for _reader, writer in streams:
            writer.close()
    finally:
        await pbx.stop()


async def test_a_banned_source_is_refused_at_accept_and_its_connections_closed(
    tmp_path: Path,
) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        host, port = _address(pbx)
        reader, writer = await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
        await asyncio.sleep(0.1)
        assert pbx.transport.connection_count == 1
        await pbx.admin.ban(ATTACKER, 600)
        assert await _closed(reader), "the banned source's connection stayed open"
        late_reader, late = await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
        assert await _closed(late_reader), "a banned source's new connection was accepted"
        assert pbx.transport.connection_count == 0
        writer.close()
        late.close()
    finally:
        await pbx.stop()


async def test_the_reply_cache_is_bounded_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.outbox

    monkeypatch.setattr(core.outbox, "REPLY_CACHE_BYTES", 4_000)
    pbx = await start_pbx(tmp_path)
    try:
        async with _attacker(pbx) as client:
            for _ in range(20):  # each 200 echoes the long Call-ID: ~1 kB apiece
                call_id = secrets.token_hex(4) + "c" * 900
                text = request_text("OPTIONS", "sip:pbx.test", local=client.local, call_id=call_id)
                assert (await client.ask(text)) is not None
        assert 0 < pbx.core.outbox.reply_cache_bytes <= 4_000
    finally:
        await pbx.stop()


# -- IPv6: one allocation is one source -----------------------------------------------------


async def test_brute_force_rotating_ipv6_addresses_in_one_64_is_banned(tmp_path: Path) -> None:
    """Loopback has one IPv6 address, so the rotating sources are handed to the route as the
    transport would hand them (the security decisions are the same object's either way)."""
    from core.net.flow import Flow

    security = replace(SecuritySettings(), auth_fail_limit_per_ip=5)
    pbx = await start_pbx(tmp_path, security=security)
    try:
        sent: list[bytes] = []
        pbx.core.outbox._send = lambda data, flow: sent.append(data) or True
        local = ("127.0.0.1", _address(pbx)[1])
        for i in range(8):
            ip = f"2001:db8:1:2::{i + 1:x}"
            guess = (
                'Authorization: Digest username="alice", realm="pbx.test", nonce="x", '
                'uri="sip:pbx.test", response="00", qop=auth, nc=00000001, cnonce="c"\r\n'
            )
            text = request_text("REGISTER", "sip:pbx.test", local=(f"[{ip}]", 5060), extra=guess)
            pbx.route.on_message(text.encode(), Flow("udp", (ip, 5060), local))
        bans = [ban.ip for ban in pbx.security.bans(pbx.clock())]
        assert bans == ["2001:db8:1:2::/64"]
        assert not pbx.security.admit("2001:db8:1:2:dead:beef:1:1", pbx.clock())
        assert pbx.security.admit("2001:db8:1:3::1", pbx.clock())  # the next /64 is not banned
        assert await _unban_prefix(pbx)
    finally:
        await pbx.stop()


async def _unban_prefix(pbx: Pbx) -> bool:
    await pbx.admin.unban("2001:db8:1:2::/64")
    return pbx.security.admit("2001:db8:1:2::99", pbx.clock())


def test_the_fail2ban_filter_ignores_what_must_not_ban() -> None:
    """Refusals that are not an attacker's fingerprint (a carrier over its limit, a known
    source's scanner-like phone, a console typo) never match the documented filter."""
    from core.security.seclog import FAIL2BAN_FAILREGEX, format_log_line

    pattern = re.compile(FAIL2BAN_FAILREGEX.replace("<HOST>", r"(?P<host>\S+)"))

    def matches(action: str) -> bool:
        line = format_log_line(SecurityEvent(action=action, source="203.0.113.9", detail="x"))
        assert line is not None
        _timestamp, rest = line.split(" ", 1)  # fail2ban matches after the date it found
        return pattern.search(rest) is not None

    assert matches("scanner-dropped") and matches("auth-failed")
    for action in (
        "scanner-dropped-known",
        "carrier-over-limit",
        "dialog-refused",
        "contact-refused",
        "console-login-failed",
    ):
        assert not matches(action), action
