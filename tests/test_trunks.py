"""Carrier trunks end to end over loopback: a real Pbx, peers written byte by byte.

The carrier (and its gateways) live on 127.0.0.2, a stranger on 127.0.0.9, phones on
127.0.0.1; each peer is a UDP socket of its own, on the test's event loop next to the Pbx.
SIPp runs the same kind of calls in tests/test_trunks_sipp.py; here every header can be
checked (CSeq shift, caller ID, digest as a client).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.peer import UdpPeer

from core.events import CallEvent, SecurityEvent, ServerEvent
from core.pbx import Pbx
from core.settings import DialplanSettings
from core.sip.digest import build_authorization, compute_response, ha1, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Message, Request, Response, make_response
from core.sip.parser import parse_message

DOMAIN = "pbx.test"
CARRIER_IP = "127.0.0.2"
STRANGER_IP = "127.0.0.9"
TRUNK_USER, TRUNK_PASSWORD = "pbx-trunk", "trunk-secret-9"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
)


class Peer(UdpPeer):
    """A SIP endpoint on its own UDP socket at `ip`: phone, carrier, gateway or stranger."""

    def __init__(self, pbx: Pbx, ip: str = "127.0.0.1", user: str = "peer") -> None:
        super().__init__(pbx, ip, name=ip)
        self.user = user

    async def __aenter__(self) -> Peer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str,
        cseq: int,
        tag: str,
        from_uri: str | None = None,
        to: str | None = None,
        routes: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        body: str = "",
    ) -> str:
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            *(f"Route: {route}" for route in routes),
            f"From: <{from_uri or f'sip:{self.user}@{DOMAIN}'}>;tag={tag}",
            f"To: {to or f'<{uri}>'}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.ip}:{self.port}>",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def respond(
        self, request: Message, status: int, *, tag: str | None = None, extra: tuple = ()
    ) -> Response:
        assert isinstance(request, Request)
        headers = [("Contact", f"<sip:{self.user}@{self.ip}:{self.port}>"), *extra]
        headers += [("Record-Route", value) for value in request.headers.get_all("record-route")]
        response = make_response(request, status, to_tag=tag, extra=headers)
        self.send(response)
        return response

    async def register(self) -> None:
        """REGISTER this peer's address as the contact of `self.user` (a phone)."""
        call_id, tag, aor = secrets.token_hex(6), secrets.token_hex(4), f"sip:{self.user}@{DOMAIN}"
        self.send(
            self.request(
                "REGISTER", f"sip:{DOMAIN}", call_id=call_id, cseq=1, tag=tag, to=f"<{aor}>"
            )
        )
        challenge = await self.expect(401)
        credentials = answer(challenge, "www-authenticate", self.user, "REGISTER", f"sip:{DOMAIN}")
        self.send(
            self.request(
                "REGISTER",
                f"sip:{DOMAIN}",
                call_id=call_id,
                cseq=2,
                tag=tag,
                to=f"<{aor}>",
                extra=(f"Authorization: {credentials}",),
            )
        )
        await self.expect(200)


def answer(challenge: Message, header: str, user: str, method: str, uri: str) -> str:
    chosen = pick_challenge(parse_auth(value) for value in challenge.headers.get_all(header))
    assert chosen is not None
    return build_authorization(chosen, user, USERS[user], method, uri)


def ack_for(invite_text: str, response: Message) -> str:
    """The ACK of a non-2xx final response (§17.1.1.3): the INVITE's Via, the response's To."""
    invite = parse_message(invite_text.encode())
    assert isinstance(invite, Request) and invite.cseq is not None
    return (
        f"ACK {invite.uri} SIP/2.0\r\nVia: {invite.headers.get('via')}\r\nMax-Forwards: 70\r\n"
        f"From: {invite.headers.get('from')}\r\nTo: {response.headers.get('to')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: {invite.cseq.number} ACK\r\nContent-Length: 0\r\n\r\n"
    )


def feed(pbx: Pbx) -> list[object]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return events


def toll_fraud_events(pbx: Pbx) -> list[SecurityEvent]:
    return [e for e in feed(pbx) if isinstance(e, SecurityEvent) and e.action == "toll-fraud"]


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    server = await start_pbx(tmp_path, dialplan=DialplanSettings(country_code="44"))
    await server.admin.add_did("01632 960001", "alice")
    await server.admin.add_did("01632 960002", "carol")  # carol never registers
    try:
        yield server
    finally:
        await server.stop()


# -- inbound ---------------------------------------------------------------------------------
async def carrier_invite(peer: Peer, number: str, *, from_uri: str) -> tuple[str, str]:
    call_id = secrets.token_hex(8)
    text = peer.request(
        "INVITE",
        f"sip:{number}@{peer.server[0]}:{peer.server[1]}",
        call_id=call_id,
        cseq=1,
        tag=secrets.token_hex(4),
        from_uri=from_uri,
        body=SDP,
    )
    peer.send(text)
    return call_id, text


async def test_carrier_invite_to_did_rings_the_user_without_a_challenge(pbx: Pbx) -> None:
    await pbx.admin.add_carrier("acme", [f"{CARRIER_IP}/32"])
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "carrier") as carrier:
        await alice.register()
        # The E.164 form, with a "+": the DID was stored from its national form.
        call_id, _text = await carrier_invite(
            carrier, "+441632960001", from_uri="sip:+442079460000@carrier.example"
        )
        invite = await alice.expect("INVITE")
        assert invite.call_id == call_id
        alice.respond(invite, 180, tag="alice1")
        await carrier.expect(180)
        ok = alice.respond(invite, 200, tag="alice1")
        final = await carrier.expect(200)
        assert final.to_tag == ok.to_tag
        assert not carrier.received(407)
    calls = [e for e in feed(pbx) if isinstance(e, CallEvent) and e.call_id == call_id]
    assert [e.state for e in calls][:3] == ["trying", "ringing", "answered"]
    assert calls[0].callee == "alice"
    assert pbx.trunks.inbound_calls == 1


@pytest.mark.parametrize("number", ["0044-1632-960001", "01632960001", "441632960001"])
async def test_every_way_of_writing_the_did_reaches_it(pbx: Pbx, number: str) -> None:
    await pbx.admin.add_carrier("acme", [f"{CARRIER_IP}/32"])
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "carrier") as carrier:
        await alice.register()
        call_id, _text = await carrier_invite(carrier, number, from_uri="sip:c@carrier.example")
        invite = await alice.expect("INVITE")
        assert invite.call_id == call_id
        alice.respond(invite, 486, tag="busy")
        await carrier.expect(486)


async def test_carrier_reaches_a_username_and_gets_404_and_480(pbx: Pbx) -> None:
    await pbx.admin.add_carrier("acme", ["127.0.0.2/31"])  # a range: .2 and .3
    async with Peer(pbx, user="bob") as bob, Peer(pbx, CARRIER_IP, "carrier") as carrier:
        await bob.register()
        await carrier_invite(carrier, "bob", from_uri="sip:c@carrier.example")
        invite = await bob.expect("INVITE")
        bob.respond(invite, 603, tag="no")
        await carrier.expect(603)
        await carrier_invite(carrier, "+441632960999", from_uri="sip:c@carrier.example")
        await carrier.expect(404)
        await carrier_invite(carrier, "+441632960002", from_uri="sip:c@carrier.example")
        await carrier.expect(480)  # carol's DID: nobody registered
        # A carrier's call to a number we don't own never goes back out through a carrier.
        await carrier_invite(carrier, "+33123456789", from_uri="sip:c@carrier.example")
        await carrier.expect(404)
        register = carrier.request(
            "REGISTER", f"sip:{DOMAIN}", call_id="r1", cseq=1, tag="t", to=f"<sip:x@{DOMAIN}>"
        )
        carrier.send(register)
        await carrier.expect(403)


@pytest.mark.parametrize("from_uri", ["sip:+442079460000@carrier.example", "sip:c@127.0.0.2"])
async def test_stranger_is_challenged_whatever_its_from_says(pbx: Pbx, from_uri: str) -> None:
    await pbx.admin.add_carrier("acme", [f"{CARRIER_IP}/32"])
    async with Peer(pbx, user="alice") as alice, Peer(pbx, STRANGER_IP, "x") as stranger:
        await alice.register()
        await carrier_invite(stranger, "+441632960001", from_uri=from_uri)
        await stranger.expect(407)
        await asyncio.sleep(0.2)
        assert not alice.received("INVITE")


# -- outbound --------------------------------------------------------------------------------
class Caller:
    """alice placing calls: INVITE, 407 from the PBX, INVITE with credentials."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.tag = secrets.token_hex(4)

    async def call(self, number: str, call_id: str | None = None) -> tuple[str, str]:
        peer = self.peer
        call_id = call_id or secrets.token_hex(8)
        uri = f"sip:{number}@{DOMAIN}"
        first = peer.request(
            "INVITE",
            uri,
            call_id=call_id,
            cseq=1,
            tag=self.tag,
            body=SDP,
            extra=("P-Asserted-Identity: <sip:+15550000000@evil.example>",),
        )
        peer.send(first)
        challenge = await peer.expect(407, where=lambda m: m.call_id == call_id)
        peer.send(ack_for(first, challenge))
        credentials = answer(challenge, "proxy-authenticate", peer.user, "INVITE", uri)
        invite = peer.request(
            "INVITE",
            uri,
            call_id=call_id,
            cseq=2,
            tag=self.tag,
            body=SDP,
            extra=(f"Proxy-Authorization: {credentials}",),
        )
        peer.send(invite)
        return call_id, invite


def check_gateway_digest(invite: Message, header: str, realm: str, nonce: str) -> None:
    """What a carrier's server does with our answer: recompute the digest (RFC 7616 §3.4)."""
    assert isinstance(invite, Request)
    values = invite.headers.get_all(header)
    assert len(values) == 1, values
    params = parse_auth(values[0])
    assert params.get("username") == TRUNK_USER
    assert params.get("realm") == realm and params.get("nonce") == nonce
    assert params.get("uri") == str(invite.uri)
    expected = compute_response(
        ha1(TRUNK_USER, realm, TRUNK_PASSWORD),
        "INVITE",
        str(invite.uri),
        nonce,
        "MD5",
        qop=params.get("qop"),
        nc=params.get("nc"),  # type: ignore[arg-type]
        cnonce=params.get("cnonce"),
    )
    assert params.get("response") == expected


async def grant_outbound(pbx: Pbx, **changes: object) -> None:
    fields: dict[str, object] = {"outbound_policy": "national", "caller_id": "+441632960100"}
    fields.update(changes)
    await pbx.admin.update_user("alice", **fields)


async def test_outbound_call_answers_the_gateway_challenge(pbx: Pbx) -> None:
    await grant_outbound(pbx)
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "acme",
            [f"{CARRIER_IP}/32"],
            gateway=f"{CARRIER_IP}:{gateway.port}",
            username=TRUNK_USER,
            password=TRUNK_PASSWORD,
        )
        call_id, _invite = await Caller(alice).call("01632-960555")
        first = await gateway.expect("INVITE")
        assert isinstance(first, Request)
        assert str(first.uri) == f"sip:+441632960555@{CARRIER_IP}:{gateway.port};user=phone"
        assert first.call_id == call_id
        # Caller ID: From user and P-Asserted-Identity; the phone's own PAI is gone.
        assert first.from_addr is not None and first.from_addr.uri.user == "+441632960100"
        assert first.headers.get_all("p-asserted-identity") == [f"<sip:+441632960100@{DOMAIN}>"]
        assert first.cseq is not None and first.cseq.number == 2
        assert first.headers.get("proxy-authorization") is None  # alice's credentials stay here
        gateway.respond(
            first,
            407,
            tag="gw-challenge",
            extra=(
                ("Proxy-Authenticate", 'Digest realm="acme.example", nonce="n0nce", qop="auth"'),
            ),
        )
        await gateway.expect("ACK")  # the PBX's transaction acknowledges the 407 itself
        second = await gateway.expect("INVITE")
        assert isinstance(second, Request)
        assert second.call_id == call_id and second.from_tag == first.from_tag
        assert second.cseq is not None and second.cseq.number == 3  # §22.2: CSeq + 1
        assert second.top_via is not None and second.top_via.branch != first.top_via.branch  # type: ignore[union-attr]
        check_gateway_digest(second, "proxy-authorization", "acme.example", "n0nce")
        gateway.respond(second, 180, tag="gw1")
        ringing = await alice.expect(180)
        assert ringing.cseq is not None and ringing.cseq.number == 2  # alice's own CSeq
        gateway.respond(second, 200, tag="gw1")
        ok = await alice.expect(
            200, where=lambda m: m.cseq is not None and m.cseq.method == "INVITE"
        )
        assert ok.cseq is not None and ok.cseq.number == 2
        assert ok.from_addr is not None and ok.from_addr.uri.user == "alice"
        # In the dialog: alice's ACK and BYE reach the gateway with the CSeq shifted by one.
        routes = tuple(reversed(ok.headers.values("record-route")))
        ack = alice.request(
            "ACK",
            f"sip:gw@{CARRIER_IP}:{gateway.port}",
            call_id=call_id,
            cseq=2,
            tag=alice_tag(ok),
            to=ok.headers.get("to"),
            routes=routes,
        )
        alice.send(ack)
        gateway_ack = await gateway.expect("ACK", where=lambda m: m.to_tag == "gw1")
        assert gateway_ack.cseq is not None and gateway_ack.cseq.number == 3
        bye = alice.request(
            "BYE",
            f"sip:gw@{CARRIER_IP}:{gateway.port}",
            call_id=call_id,
            cseq=3,
            tag=alice_tag(ok),
            to=ok.headers.get("to"),
            routes=routes,
        )
        alice.send(bye)
        gateway_bye = await gateway.expect("BYE")
        assert gateway_bye.cseq is not None and gateway_bye.cseq.number == 4
        gateway.respond(gateway_bye, 200)
        bye_ok = await alice.expect(
            200, where=lambda m: m.cseq is not None and m.cseq.method == "BYE"
        )
        assert bye_ok.cseq is not None and bye_ok.cseq.number == 3
    states = [e.state for e in feed(pbx) if isinstance(e, CallEvent) and e.call_id == call_id]
    assert states[-1] == "ended" and "answered" in states
    assert pbx.trunks.limiter.active("alice") == 0


def alice_tag(message: Message) -> str:
    tag = message.from_tag
    assert tag is not None
    return tag


async def test_failover_to_the_second_carrier_on_503(pbx: Pbx) -> None:
    await grant_outbound(pbx)
    async with (
        Peer(pbx, user="alice") as alice,
        Peer(pbx, CARRIER_IP, "gw1") as first_gateway,
        Peer(pbx, CARRIER_IP, "gw2") as second_gateway,
    ):
        await pbx.admin.add_carrier(
            "second",
            [f"{CARRIER_IP}/32"],
            gateway=f"{CARRIER_IP}:{second_gateway.port}",
            priority=20,
        )
        await pbx.admin.add_carrier(
            "first", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{first_gateway.port}", priority=5
        )
        call_id, _invite = await Caller(alice).call("01632960777")
        refused = await first_gateway.expect("INVITE")
        first_gateway.respond(refused, 503, tag="down")
        await first_gateway.expect("ACK")
        invite = await second_gateway.expect("INVITE")
        assert invite.call_id == call_id
        second_gateway.respond(invite, 200, tag="up")
        ok = await alice.expect(200)
        assert ok.to_tag == "up"
        assert not alice.received(503) and not alice.received(500)
    warnings = [e for e in feed(pbx) if isinstance(e, ServerEvent) and call_id in e.message]
    assert warnings and "first" in warnings[0].message and "503" in warnings[0].message


async def test_last_gateway_failing_answers_the_caller(pbx: Pbx) -> None:
    await grant_outbound(pbx)
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "only", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
        )
        call_id, _invite = await Caller(alice).call("01632960777")
        invite = await gateway.expect("INVITE")
        gateway.respond(invite, 503, tag="down")
        final = await alice.expect(500)  # §16.7: a 503 goes up as 500
        assert final.call_id == call_id
    assert pbx.trunks.limiter.active("alice") == 0


async def test_blocked_prefix_is_refused_with_an_event(pbx: Pbx) -> None:
    await grant_outbound(pbx, outbound_policy="international", deny_prefixes=("0900",))
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
        )
        # Written internationally, the premium number is still the denied 0900 prefix.
        call_id, _invite = await Caller(alice).call("+44900123456")
        refused = await alice.expect(403)
        assert refused.call_id == call_id
        await asyncio.sleep(0.1)
        assert not gateway.received("INVITE")
    events = toll_fraud_events(pbx)
    assert len(events) == 1
    assert events[0].user == "alice" and "0900" in events[0].detail
    assert events[0].source == "127.0.0.1"


async def test_new_users_cannot_call_out(pbx: Pbx) -> None:
    """The default policy is "none": other users only."""
    async with Peer(pbx, user="bob") as bob, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
        )
        await Caller(bob).call("960123")
        refused = await bob.expect(403)
        assert "policy" in (toll_fraud_events(pbx)[0].detail)
        assert refused.status == 403
        assert not gateway.received("INVITE")


async def test_concurrent_call_limit_refuses_the_call_over_it(pbx: Pbx) -> None:
    await grant_outbound(pbx, max_concurrent_calls=1)
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
        )
        caller = Caller(alice)
        first_id, _first = await caller.call("01632960701")
        ringing = await gateway.expect("INVITE")
        gateway.respond(ringing, 180, tag="r")
        await alice.expect(180)
        second_id, _second = await caller.call("01632960702")
        busy = await alice.expect(486)
        assert busy.call_id == second_id
        assert pbx.trunks.limiter.active("alice") == 1
        # The first call ends: the limit has room again.
        gateway.respond(ringing, 486, tag="r")
        await alice.expect(486, where=lambda m: m.call_id == first_id)
        assert pbx.trunks.limiter.active("alice") == 0
        third_id, _third = await caller.call("01632960703")
        third = await gateway.expect("INVITE")
        assert third.call_id == third_id
    events = toll_fraud_events(pbx)
    assert events and "limit 1" in events[0].detail


async def test_a_user_dialling_a_did_reaches_its_owner(pbx: Pbx) -> None:
    async with Peer(pbx, user="alice") as alice, Peer(pbx, user="bob") as bob:
        await alice.register()
        await Caller(bob).call("01632-960001")  # bob's policy is "none": a DID is internal
        invite = await alice.expect("INVITE")
        assert invite.from_addr is not None and invite.from_addr.uri.user == "bob"
        alice.respond(invite, 486, tag="busy")
        await bob.expect(486)


async def test_unknown_non_number_user_is_404_and_foreign_domain_403(pbx: Pbx) -> None:
    async with Peer(pbx, user="alice") as alice:
        caller = Caller(alice)
        await caller.call("nobody")
        await alice.expect(404)
        call_id = secrets.token_hex(8)
        uri = "sip:someone@elsewhere.example"
        first = alice.request("INVITE", uri, call_id=call_id, cseq=1, tag=caller.tag)
        alice.send(first)
        challenge = await alice.expect(407)
        alice.send(ack_for(first, challenge))
        credentials = answer(challenge, "proxy-authenticate", "alice", "INVITE", uri)
        alice.send(
            alice.request(
                "INVITE",
                uri,
                call_id=call_id,
                cseq=2,
                tag=caller.tag,
                extra=(f"Proxy-Authorization: {credentials}",),
            )
        )
        await alice.expect(403)
