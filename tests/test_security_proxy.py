"""The proxy's relay and toll-fraud holes, attacked over real loopback sockets.

Forged responses, a stolen Record-Route token, Contacts pointing at a gateway or at the
server itself, forged caller identity. A listener plays the victim (a host on the LAN, a
carrier gateway, a service on localhost) and must receive nothing. Phones are the byte-level
phones of tests/test_proxy.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from conftest import USERS, start_pbx
from support.client import UdpClient
from test_proxy import SDP, Phone, ack_for

from core.events import SecurityEvent
from core.net.flow import Flow
from core.pbx import Pbx
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Request, Response
from core.sip.parser import parse_message

ATTACKER = "127.0.0.5"
VICTIM = "127.0.0.7"
GATEWAY = "127.0.0.9"


def _address(pbx: Pbx) -> tuple[str, int]:
    return pbx.listening[0].host, pbx.listening[0].port


@asynccontextmanager
async def _udp_victim(ip: str = VICTIM) -> AsyncIterator[UdpClient]:
    victim = UdpClient(("127.0.0.1", 9))
    loop = asyncio.get_running_loop()
    victim.transport, _ = await loop.create_datagram_endpoint(
        lambda: victim.receiver, local_addr=(ip, 0)
    )
    victim.local = victim.transport.get_extra_info("sockname")[:2]
    try:
        yield victim
    finally:
        victim.close()


@asynccontextmanager
async def _phone(pbx: Pbx, user: str, ip: str = "127.0.0.1") -> AsyncIterator[Phone]:
    phone = Phone(pbx, user)
    phone.ip = ip
    await phone.open()
    try:
        yield phone
    finally:
        phone.close()


async def _settled(pbx: Pbx, peer: Phone) -> None:
    """Everything sent before this point has been handled: an OPTIONS to the server sent
    after it is answered (the server handles one source's datagrams in order)."""
    call_id = secrets.token_hex(6)
    peer.send(peer.request("OPTIONS", "sip:pbx.test", to="<sip:pbx.test>", call_id=call_id, cseq=1))
    await peer.expect(200, where=lambda message: message.call_id == call_id)


def _security(pbx: Pbx, action: str) -> list[SecurityEvent]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return [e for e in events if isinstance(e, SecurityEvent) and e.action == action]


def _forged_200(pbx: Pbx, below: list[str]) -> str:
    host, port = _address(pbx)
    vias = [f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKforged{secrets.token_hex(4)}"]
    vias += [f"Via: {via}" for via in below]
    body = "ATTACKER-CHOSEN BYTES\r\n"
    return (
        "SIP/2.0 200 OK\r\n"
        + "\r\n".join(vias)
        + "\r\n"
        + "From: <sip:x@pbx.test>;tag=1\r\nTo: <sip:y@pbx.test>;tag=2\r\n"
        + f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 INVITE\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


# -- 1. forged responses ------------------------------------------------------------------


async def test_a_forged_200_is_not_relayed_to_a_udp_victim(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        async with _udp_victim() as victim, _phone(pbx, "eve", ATTACKER) as attacker:
            attacker.send(
                _forged_200(pbx, [f"SIP/2.0/UDP {VICTIM}:{victim.local[1]};branch=z9hG4bKv"])
            )
            await _settled(pbx, attacker)
            assert await victim.recv(0.3) is None, "the forged 200 was relayed to the victim"
            assert pbx.proxy.forwarder.relayed == 0
    finally:
        await pbx.stop()


async def test_a_forged_200_opens_no_tcp_connection_to_a_victim_service(tmp_path: Path) -> None:
    accepted: list[bytes] = []

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(service, VICTIM, 0)
    victim_port = server.sockets[0].getsockname()[1]
    pbx = await start_pbx(tmp_path)
    try:
        async with _phone(pbx, "eve", ATTACKER) as attacker:
            attacker.send(_forged_200(pbx, [f"SIP/2.0/TCP {VICTIM}:{victim_port};branch=z9hG4bKv"]))
            await _settled(pbx, attacker)
            await asyncio.sleep(0.3)
            assert accepted == [], "the server connected to the victim's service"
    finally:
        await pbx.stop()
        server.close()


async def test_a_200_whose_vias_name_the_server_does_not_loop_through_it(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        host, port = _address(pbx)
        async with _phone(pbx, "eve", ATTACKER) as attacker:
            own = [f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKloop{i}" for i in range(30)]
            attacker.send(_forged_200(pbx, own))
            await _settled(pbx, attacker)
            await asyncio.sleep(0.2)
            assert pbx.proxy.forwarder.relayed == 0
    finally:
        await pbx.stop()


# -- 3. the Record-Route token --------------------------------------------------------------


async def _ringing_call(pbx: Pbx, alice: Phone, bob: Phone) -> tuple[str, Request]:
    """alice calls bob; bob rings. Returns the call's INVITE text and what bob received."""
    await bob.register()
    invite = await alice.invite("bob")
    incoming = await bob.expect("INVITE")
    assert isinstance(incoming, Request)
    bob.respond(incoming, 180, tag="bobtag")
    await alice.expect(180)
    return invite, incoming


async def test_a_seen_token_does_not_relay_a_third_partys_request_elsewhere(
    tmp_path: Path,
) -> None:
    """Anyone who saw the 180 (its Record-Route token) sends a 'mid-dialog' INVITE to a
    carrier-like victim with the call's Call-ID: refused, nothing reaches the victim."""
    pbx = await start_pbx(tmp_path)
    try:
        async with (
            _phone(pbx, "alice") as alice,
            _phone(pbx, "bob") as bob,
            _phone(pbx, "eve", ATTACKER) as eve,
            _udp_victim() as victim,
        ):
            _invite, incoming = await _ringing_call(pbx, alice, bob)
            routes = tuple(incoming.headers.values("record-route"))
            target = f"sip:+88213000000@{VICTIM}:{victim.local[1]}"
            forged = eve.request(
                "INVITE",
                target,
                to="<sip:bob@pbx.test>;tag=whatever",
                call_id=incoming.call_id or "",
                cseq=7,
                routes=routes,
                body=SDP,
            )
            eve.send(forged)
            await eve.expect(403)
            assert await victim.recv(0.3) is None
            assert _security(pbx, "dialog-refused")
    finally:
        await pbx.stop()


async def test_after_the_call_the_token_relays_nothing_outside_the_dialog(
    tmp_path: Path,
) -> None:
    """The call is over (or the server restarted): the call table no longer knows it, and
    the token alone must not carry a request to a new destination."""
    pbx = await start_pbx(tmp_path)
    try:
        async with (
            _phone(pbx, "alice") as alice,
            _phone(pbx, "bob") as bob,
            _udp_victim() as victim,
        ):
            invite, incoming = await _ringing_call(pbx, alice, bob)
            bob.respond(incoming, 486, tag="bobtag")
            busy = await alice.expect(486)
            alice.send(ack_for(invite, busy))
            await asyncio.sleep(0.1)
            assert pbx.calls() == []
            routes = tuple(reversed(incoming.headers.values("record-route")))
            target = f"sip:+88213000000@{VICTIM}:{victim.local[1]}"
            forged = alice.request(
                "INVITE",
                target,
                to="<sip:bob@pbx.test>;tag=bobtag",
                call_id=incoming.call_id or "",
                cseq=9,
                routes=routes,
                body=SDP,
            )
            alice.send(forged)
            await alice.expect(403)
            assert await victim.recv(0.3) is None
    finally:
        await pbx.stop()


async def test_a_known_dialog_is_relayed_only_to_its_other_end(tmp_path: Path) -> None:
    """Inside a live call a caller's re-INVITE naming another host still goes to the callee,
    the dialog's other end, never to the host the Request-URI names."""
    pbx = await start_pbx(tmp_path)
    try:
        async with (
            _phone(pbx, "alice") as alice,
            _phone(pbx, "bob") as bob,
            _udp_victim() as victim,
        ):
            _invite, incoming = await _ringing_call(pbx, alice, bob)
            routes = tuple(reversed(incoming.headers.values("record-route")))
            target = f"sip:+88213000000@{VICTIM}:{victim.local[1]}"
            reinvite = alice.request(
                "INVITE",
                target,
                to="<sip:bob@pbx.test>;tag=bobtag",
                call_id=incoming.call_id or "",
                cseq=9,
                routes=routes,
                body=SDP,
            )
            alice.send(reinvite)
            await bob.expect("INVITE", where=lambda m: m.cseq is not None and m.cseq.number == 9)
            assert await victim.recv(0.3) is None
    finally:
        await pbx.stop()


# -- 4. contacts as a toll-fraud bypass ------------------------------------------------------


async def _register_contact(phone: Phone, contact: str) -> int:
    phone.contact_host = None
    call_id = secrets.token_hex(6)
    aor = f"<sip:{phone.user}@pbx.test>"
    first = phone.request("REGISTER", "sip:pbx.test", to=aor, call_id=call_id, cseq=1)
    phone.send(first.replace(f"Contact: {phone.contact}", f"Contact: {contact}"))
    challenge = await phone.expect(401)
    credentials = phone.answer_challenge(challenge, "www-authenticate", "REGISTER", "sip:pbx.test")
    second = phone.request(
        "REGISTER",
        "sip:pbx.test",
        to=aor,
        call_id=call_id,
        cseq=2,
        extra=(f"Authorization: {credentials}",),
    )
    phone.send(second.replace(f"Contact: {phone.contact}", f"Contact: {contact}"))
    return await _final(phone, call_id)


async def _final(phone: Phone, call_id: str) -> int:
    """The status of the next final response for `call_id`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while loop.time() < deadline:
        messages = phone.inbox.messages
        for index in range(phone.seen, len(messages)):
            status = getattr(messages[index], "status", None)
            if messages[index].call_id == call_id and status is not None and status >= 200:
                phone.seen = index + 1
                return int(status)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{phone.name}: no final answer for {call_id}")


async def test_a_contact_at_a_carrier_gateway_is_refused(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        await pbx.admin.add_carrier("acme", [f"{GATEWAY}/32"], gateway=f"{GATEWAY}:5060")
        async with _phone(pbx, "alice") as alice:
            status = await _register_contact(alice, f"<sip:+88213000000@{GATEWAY}:5060>")
            assert status == 403
            assert pbx.location.contact_count == 0
            assert _security(pbx, "contact-refused")
    finally:
        await pbx.stop()


async def test_a_contact_at_our_own_socket_is_refused_another_port_is_not(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        host, port = _address(pbx)
        async with _phone(pbx, "alice") as alice:
            assert await _register_contact(alice, f"<sip:alice@{host}:{port}>") == 403
            # A phone (or SIPp) on the same host at another port is legitimate.
            assert await _register_contact(alice, f"<sip:alice@{host}:{alice.port}>") == 200
    finally:
        await pbx.stop()


async def test_a_stored_contact_at_a_gateway_is_never_called(tmp_path: Path) -> None:
    """A binding stored before the check existed (put in the location table directly):
    calling the user must not send the INVITE to the gateway."""
    pbx = await start_pbx(tmp_path)
    try:
        async with _udp_victim(GATEWAY) as gateway, _phone(pbx, "alice") as alice:
            await pbx.admin.add_carrier(
                "acme", [f"{GATEWAY}/32"], gateway=f"{GATEWAY}:{gateway.local[1]}"
            )
            pbx.registrar.destinations = None  # an older version's registrar
            async with _phone(pbx, "bob") as bob:
                status = await _register_contact(bob, f"<sip:+88213@{GATEWAY}:{gateway.local[1]}>")
                assert status == 200
            await alice.invite("bob")
            await alice.expect(480)
            assert await gateway.recv(0.3) is None, "a user's call went out to the gateway"
    finally:
        await pbx.stop()


# -- 10. caller identity ----------------------------------------------------------------------


async def test_a_users_asserted_identity_is_replaced_on_internal_calls(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        async with _phone(pbx, "alice") as alice, _phone(pbx, "bob") as bob:
            await bob.register()
            uri = "sip:bob@pbx.test"
            first = alice.request("INVITE", uri, to=f"<{uri}>", call_id="pai-1", cseq=1, body=SDP)
            alice.send(first)
            challenge = await alice.expect(407)
            alice.send(ack_for(first, challenge))
            credentials = alice.answer_challenge(challenge, "proxy-authenticate", "INVITE", uri)
            alice.send(
                alice.request(
                    "INVITE",
                    uri,
                    to=f"<{uri}>",
                    call_id="pai-1",
                    cseq=2,
                    extra=(
                        f"Proxy-Authorization: {credentials}",
                        "P-Asserted-Identity: <sip:ceo@pbx.test>",
                        'Remote-Party-ID: "CEO" <sip:ceo@pbx.test>;party=calling',
                    ),
                    body=SDP,
                )
            )
            incoming = await bob.expect("INVITE")
            assert incoming.headers.get_all("p-asserted-identity") == ["<sip:alice@pbx.test>"]
            assert incoming.headers.get("remote-party-id") is None
    finally:
        await pbx.stop()


# -- further holes ----------------------------------------------------------------------------


async def test_a_contact_name_resolving_to_our_own_socket_is_never_sent_to(
    tmp_path: Path,
) -> None:
    """A host name the registrar cannot judge (it never resolves names) is checked once
    resolved: `localhost` at our own port must not make calls loop through the server."""
    pbx = await start_pbx(tmp_path)
    try:
        _host, port = _address(pbx)
        async with _phone(pbx, "alice") as alice, _phone(pbx, "bob") as bob:
            assert await _register_contact(bob, f"<sip:bob@localhost:{port}>") == 200
            received = pbx.transport.received_messages
            await alice.invite("bob")
            await alice.expect(100)
            await asyncio.sleep(0.3)
            # Only alice's two INVITEs and her ACK arrived: nothing came back to ourselves.
            assert pbx.transport.received_messages - received == 3
            assert pbx.transport.refused_sends >= 1
    finally:
        await pbx.stop()


async def test_only_the_inviting_hop_may_cancel(tmp_path: Path) -> None:
    """The branch travels in every response; knowing it must not let a third party cancel."""
    pbx = await start_pbx(tmp_path)
    try:
        async with (
            _phone(pbx, "alice") as alice,
            _phone(pbx, "bob") as bob,
            _phone(pbx, "eve", ATTACKER) as eve,
        ):
            invite, _incoming = await _ringing_call(pbx, alice, bob)
            cancel = invite.replace("INVITE sip:", "CANCEL sip:", 1).replace(
                "CSeq: 2 INVITE", "CSeq: 2 CANCEL"
            )
            cancel = cancel.split("Content-Type:")[0] + "Content-Length: 0\r\n\r\n"
            eve.send(cancel)
            await eve.expect(481)
            await asyncio.sleep(0.2)
            assert bob.received("CANCEL") == []
            alice.send(cancel)
            await alice.expect(200)
            await bob.expect("CANCEL")
    finally:
        await pbx.stop()


async def test_a_users_asserted_identity_is_removed_in_dialog_too(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        async with _phone(pbx, "alice") as alice, _phone(pbx, "bob") as bob:
            await bob.register()
            await alice.invite("bob")
            incoming = await bob.expect("INVITE")
            bob.respond(incoming, 200, tag="bobtag", body=SDP)
            answer = await alice.expect(200)
            alice.send(alice.in_dialog("ACK", answer, cseq=2, caller_side=True))
            await bob.expect("ACK")
            update = alice.in_dialog("UPDATE", answer, cseq=3, caller_side=True)
            update = update.replace(
                "Content-Length:", "P-Asserted-Identity: <sip:ceo@pbx.test>\r\nContent-Length:"
            )
            alice.send(update)
            relayed = await bob.expect("UPDATE")
            assert relayed.headers.get("p-asserted-identity") is None
    finally:
        await pbx.stop()


async def test_refusals_one_packet_provokes_are_reported_throttled(tmp_path: Path) -> None:
    """Fifty forged in-dialog requests: fifty 403s, but one security line (and a count),
    not fifty: a spoofed flood must not write a log line per packet."""
    pbx = await start_pbx(tmp_path)
    try:
        host, port = _address(pbx)
        async with _phone(pbx, "eve", ATTACKER) as eve:
            forged = (f"<sip:{host}:{port};lr;pbx=1-0000000000000000>",)
            for index in range(50):
                eve.send(
                    eve.request(
                        "BYE",
                        f"sip:bob@{VICTIM}:5060",
                        to="<sip:bob@pbx.test>;tag=x",
                        call_id=f"forged-{index}",
                        cseq=5,
                        routes=forged,
                    )
                )
            for _ in range(50):
                await eve.expect(403)
            assert len(_security(pbx, "dialog-refused")) == 1
    finally:
        await pbx.stop()


async def test_contacts_at_unspecified_multicast_or_broadcast_addresses_are_refused(
    tmp_path: Path,
) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        async with _phone(pbx, "alice") as alice:
            for host in ("0.0.0.0", "224.0.0.1", "255.255.255.255", "[ff02::1]"):
                assert await _register_contact(alice, f"<sip:alice@{host}:5062>") == 403, host
            assert pbx.location.contact_count == 0
    finally:
        await pbx.stop()


async def test_a_loopback_contact_registered_from_elsewhere_is_refused(tmp_path: Path) -> None:
    """From another host, a Contact at 127.0.0.1 would aim calls at this host's own services
    (SIP bytes written into a local database's TCP port); from this host it is a local phone.
    Loopback is all a test can bind, so the remote REGISTER is handed to the route as the
    transport would hand it, from a documentation address."""
    pbx = await start_pbx(tmp_path)
    try:
        sent: list[bytes] = []
        real_send = pbx.core.outbox._send
        pbx.core.outbox._send = lambda data, flow: sent.append(data) or True
        source = ("192.0.2.50", 5060)
        flow = Flow("udp", source, ("127.0.0.1", _address(pbx)[1]))

        def register(cseq: int, extra: str = "") -> Response:
            text = (
                "REGISTER sip:pbx.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bKlo{cseq}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:alice@pbx.test>;tag=lo\r\n"
                "To: <sip:alice@pbx.test>\r\nCall-ID: loopback-1\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                "Contact: <sip:alice@127.0.0.1:6379;transport=tcp>\r\n"
                f"{extra}Content-Length: 0\r\n\r\n"
            )
            pbx.route.on_message(text.encode(), flow)
            answer = parse_message(sent[-1])
            assert isinstance(answer, Response)
            return answer

        challenge = register(1)
        chosen = pick_challenge(
            parse_auth(value) for value in challenge.headers.get_all("www-authenticate")
        )
        assert chosen is not None
        credentials = build_authorization(
            chosen, "alice", USERS["alice"], "REGISTER", "sip:pbx.test"
        )
        assert register(2, f"Authorization: {credentials}\r\n").status == 403
        assert pbx.location.contact_count == 0
        pbx.core.outbox._send = real_send
        async with _phone(pbx, "alice") as local:  # a phone on this host: fine
            assert await _register_contact(local, f"<sip:alice@127.0.0.1:{local.port}>") == 200
    finally:
        await pbx.stop()
