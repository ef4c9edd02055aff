"""The proxy with phones we write byte by byte: what SIPp cannot stage on cue.

Retransmissions on purpose, a phone that never answers, a call that outlives its limit, a
callee behind NAT, forged in-dialog requests. Each phone is a UDP socket of its own on
127.0.0.1, talking to an in-process Pbx.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import TcpClient
from support.peer import UdpPeer

from core.events import CallEvent
from core.pbx import Pbx
from core.settings import ProxySettings
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Message, Request, Response, make_response
from core.sip.parser import parse_message

DOMAIN = "pbx.test"
_branches = itertools.count(1)
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
)


class Phone(UdpPeer):
    """A UDP SIP phone: writes requests and responses, keeps every message it received."""

    def __init__(self, pbx: Pbx, user: str, contact_host: str | None = None) -> None:
        super().__init__(pbx, "127.0.0.1", name=user)
        self.user = user
        self.password = USERS.get(user, "")
        self.contact_host = contact_host
        self.tag = secrets.token_hex(4)

    async def __aenter__(self) -> Phone:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        """The address the phone believes it has (a private one behind NAT)."""
        return self.contact_host or "127.0.0.1"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.host}:{self.port}>"

    def request(
        self,
        method: str,
        uri: str,
        *,
        to: str,
        call_id: str,
        cseq: int,
        from_user: str | None = None,
        routes: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        body: str = "",
        branch: str | None = None,
        tag: str | None = None,
    ) -> str:
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch or new_branch()};rport",
            "Max-Forwards: 70",
            *(f"Route: {route}" for route in routes),
            f"From: <sip:{from_user or self.user}@{DOMAIN}>;tag={tag or self.tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: {self.contact}",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def register(self) -> None:
        call_id = secrets.token_hex(6)
        aor = f"<sip:{self.user}@{DOMAIN}>"
        self.send(self.request("REGISTER", f"sip:{DOMAIN}", to=aor, call_id=call_id, cseq=1))
        challenge = await self.expect(401)
        credentials = self.answer_challenge(
            challenge, "www-authenticate", "REGISTER", f"sip:{DOMAIN}"
        )
        self.send(
            self.request(
                "REGISTER",
                f"sip:{DOMAIN}",
                to=aor,
                call_id=call_id,
                cseq=2,
                extra=(f"Authorization: {credentials}",),
            )
        )
        await self.expect(200)

    async def invite(
        self, callee: str, *, call_id: str | None = None, from_user: str | None = None
    ) -> str:
        """INVITE `callee`, answer the 407, send the authenticated INVITE; returns its text."""
        call_id = call_id or secrets.token_hex(8)
        uri = f"sip:{callee}@{DOMAIN}"
        first = self.request(
            "INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=1, from_user=from_user, body=SDP
        )
        self.send(first)
        challenge = await self.expect(407)
        self.send(ack_for(first, challenge))
        credentials = self.answer_challenge(challenge, "proxy-authenticate", "INVITE", uri)
        invite = self.request(
            "INVITE",
            uri,
            to=f"<{uri}>",
            call_id=call_id,
            cseq=2,
            from_user=from_user,
            extra=(f"Proxy-Authorization: {credentials}",),
            body=SDP,
        )
        self.send(invite)
        return invite

    def answer_challenge(self, challenge: Message, header: str, method: str, uri: str) -> str:
        chosen = pick_challenge(parse_auth(value) for value in challenge.headers.get_all(header))
        assert chosen is not None
        return build_authorization(chosen, self.user, self.password, method, uri)

    def respond(
        self, request: Message, status: int, *, tag: str | None = None, body: str = ""
    ) -> Response:
        assert isinstance(request, Request)
        extra = [("Contact", self.contact)]
        extra += [("Record-Route", value) for value in request.headers.get_all("record-route")]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        response = make_response(request, status, to_tag=tag, extra=extra, body=body.encode())
        self.send(response)
        return response

    def in_dialog(
        self,
        method: str,
        dialog: Message,
        *,
        cseq: int,
        caller_side: bool,
        remote_tag: str | None = None,
    ) -> str:
        """A request in the dialog `dialog` (the 2xx the caller got, or the INVITE the callee
        got) established: Route set from its Record-Route, Request-URI its Contact."""
        record_route = dialog.headers.values("record-route")
        routes = tuple(reversed(record_route)) if caller_side else tuple(record_route)
        contacts = dialog.contacts or []
        target = str(contacts[0].uri)
        to = dialog.headers.get("to" if caller_side else "from") or ""
        # The callee's From is the INVITE's To with the tag it answered with.
        return self.request(
            method,
            target,
            to=to,
            call_id=dialog.call_id or "",
            cseq=cseq,
            routes=routes,
            tag=None if caller_side else remote_tag,
        )


def new_branch() -> str:
    return f"z9hG4bKtest{next(_branches)}x{secrets.token_hex(3)}"


def ack_for(invite_text: str, response: Message) -> str:
    """The ACK of a non-2xx final response: the INVITE's Via, the response's To (§17.1.1.3)."""
    invite = parse_message(invite_text.encode())
    assert isinstance(invite, Request)
    lines = [
        f"ACK {invite.uri} SIP/2.0",
        f"Via: {invite.headers.get('via')}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('from')}",
        f"To: {response.headers.get('to')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number if invite.cseq else 1} ACK",
        "Content-Length: 0",
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def call_events(pbx: Pbx) -> list[CallEvent]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return [event for event in events if isinstance(event, CallEvent)]


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    server = await start_pbx(tmp_path)
    try:
        yield server
    finally:
        await server.stop()


async def started(tmp_path: Path, **proxy: float) -> Pbx:
    return await start_pbx(tmp_path, proxy=ProxySettings(**proxy))  # type: ignore[arg-type]


# -- retransmissions --------------------------------------------------------------------------
async def test_resent_invite_is_absorbed_and_a_resent_200_relayed(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
        await bob.register()
        invite = await alice.invite("bob")
        await alice.expect(100)
        incoming = await bob.expect("INVITE")
        alice.send(invite)  # a UDP retransmission of the same INVITE (same branch)
        await alice.expect(100)  # answered again by the server transaction, hop by hop
        bob.respond(incoming, 180, tag="bobtag")
        await alice.expect(180)
        ok = bob.respond(incoming, 200, tag="bobtag", body=SDP)
        answer = await alice.expect(200)
        bob.send(ok)  # the callee resends its 200 (our ACK is late)
        await alice.expect(200)  # relayed again: only the caller's ACK stops it
        alice.send(alice.in_dialog("ACK", answer, cseq=2, caller_side=True))
        await bob.expect("ACK")
        assert len(bob.received("INVITE")) == 1
        # The ACK went by: the INVITE's transactions are let go at once, and a 200 the callee
        # still resends (its ACK lost) goes up statelessly, so the caller can ACK it again.
        assert len(pbx.proxy.table) == 0
        bob.send(ok)
        await alice.expect(200)
        assert [event.state for event in call_events(pbx)] == ["trying", "ringing", "answered"]
        assert [call.state for call in pbx.calls()] == ["answered"]
        assert pbx.stats().calls_up == 1


async def test_unanswered_invite_is_resent_until_the_callee_replies(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
        await bob.register()
        await alice.invite("bob")
        first = await bob.expect("INVITE")
        again = await bob.expect("INVITE", timeout=2.0)  # timer A: T1 = 0.5 s
        assert first.headers.get("via") == again.headers.get("via")
        bob.respond(again, 486, tag="busy")
        await alice.expect(486)
        await bob.expect("ACK")  # the proxy's own ACK, hop by hop


# -- timers -----------------------------------------------------------------------------------
async def test_ringing_too_long_gets_408_and_the_branch_is_cancelled(tmp_path: Path) -> None:
    pbx = await started(tmp_path, invite_timeout=0.5)
    try:
        async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
            await bob.register()
            await alice.invite("bob")
            incoming = await bob.expect("INVITE")
            bob.respond(incoming, 180, tag="ring")
            await alice.expect(180)
            timeout = await alice.expect(408, timeout=2.0)
            cancel = await bob.expect("CANCEL")
            assert cancel.headers.get("via") == incoming.headers.values("via")[0]
            bob.respond(cancel, 200)
            bob.respond(incoming, 487, tag="ring")
            await bob.expect("ACK")
            assert timeout.to_tag is not None
            [*_, failed] = call_events(pbx)
            assert (failed.state, failed.status, failed.reason) == ("failed", 408, "no answer")
            assert pbx.calls() == []
    finally:
        await pbx.stop()


async def test_a_call_over_the_limit_is_hung_up_on_both_sides(tmp_path: Path) -> None:
    pbx = await started(tmp_path, max_call_seconds=1.0)
    try:
        async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
            await bob.register()
            await alice.invite("bob")
            incoming = await bob.expect("INVITE")
            bob.respond(incoming, 200, tag="bobtag", body=SDP)
            answer = await alice.expect(200)
            alice.send(alice.in_dialog("ACK", answer, cseq=2, caller_side=True))
            await bob.expect("ACK")
            bye_to_bob = await bob.expect("BYE", timeout=3.0)
            bye_to_alice = await alice.expect("BYE", timeout=3.0)
            bob.respond(bye_to_bob, 200)
            alice.respond(bye_to_alice, 200)
            # In the name of the other side: the caller's From and next CSeq towards the
            # callee, the callee's tag as From towards the caller.
            assert bye_to_bob.from_tag == alice.tag and bye_to_bob.to_tag == "bobtag"
            assert bye_to_bob.cseq is not None and bye_to_bob.cseq.number == 3
            assert bye_to_alice.from_tag == "bobtag" and bye_to_alice.to_tag == alice.tag
            assert str(bye_to_bob.uri) == f"sip:bob@127.0.0.1:{bob.port}"
            [*_, ended] = call_events(pbx)
            assert (ended.state, ended.reason) == ("ended", "maximum call duration")
            await pbx.store.flush()
            [cdr] = await pbx.store.list_cdrs()
            assert cdr.reason == "maximum call duration" and 0.5 < cdr.duration < 3.0
    finally:
        await pbx.stop()


# -- refusals ---------------------------------------------------------------------------------
async def test_from_must_be_the_authenticated_user(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
        await bob.register()
        # alice's credentials, but a From claiming to be carol.
        uri = f"sip:bob@{DOMAIN}"
        alice.send(
            alice.request("INVITE", uri, to=f"<{uri}>", call_id="spoof", cseq=1, from_user="carol")
        )
        challenge = await alice.expect(407)
        credentials = alice.answer_challenge(challenge, "proxy-authenticate", "INVITE", uri)
        second = alice.request(
            "INVITE",
            uri,
            to=f"<{uri}>",
            call_id="spoof",
            cseq=2,
            from_user="carol",
            extra=(f"Proxy-Authorization: {credentials}",),
        )
        alice.send(second)
        refused = await alice.expect(403)
        assert isinstance(refused, Response) and "From" in refused.reason
        assert bob.received("INVITE") == [] and call_events(pbx) == []


async def test_too_many_active_calls_get_503(tmp_path: Path) -> None:
    pbx = await started(tmp_path, max_active_calls=1)
    try:
        async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
            await bob.register()
            await alice.invite("bob")
            await bob.expect("INVITE")
            await alice.invite("bob")
            busy = await alice.expect(503)
            assert busy.headers.get("retry-after") is not None
            assert len(pbx.calls()) == 1
    finally:
        await pbx.stop()


async def test_invite_to_the_domain_without_a_user_gets_484(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice:
        alice.send(
            alice.request("INVITE", f"sip:{DOMAIN}", to=f"<sip:{DOMAIN}>", call_id="x", cseq=1)
        )
        await alice.expect(484)


async def test_in_dialog_request_we_did_not_record_route_is_refused(pbx: Pbx) -> None:
    host, port = pbx.listening[0].host, pbx.listening[0].port
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
        to = f"<sip:bob@{DOMAIN}>;tag=theirs"
        target = f"sip:bob@127.0.0.1:{bob.port}"
        # No Route at all, and a Route naming us without the token of this Call-ID.
        alice.send(alice.request("BYE", target, to=to, call_id="forged-1", cseq=5))
        await alice.expect(404)
        forged = (f"<sip:{host}:{port};lr;pbx=000000000000>",)
        alice.send(alice.request("BYE", target, to=to, call_id="forged-2", cseq=5, routes=forged))
        await alice.expect(403)  # a token, but not one made for this dialog and these ends
        await asyncio.sleep(0.1)
        assert bob.received("BYE") == []


async def test_cancel_of_nothing_gets_481(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice:
        uri = f"sip:bob@{DOMAIN}"
        alice.send(alice.request("CANCEL", uri, to=f"<{uri}>", call_id="none", cseq=1))
        await alice.expect(481)


# -- routing ----------------------------------------------------------------------------------
async def test_callee_behind_nat_is_reached_at_its_source_address(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob", contact_host="10.0.0.5") as bob:
        await bob.register()  # Contact names a private address; the packets come from 127.0.0.1
        await alice.invite("bob")
        incoming = await bob.expect("INVITE")
        assert str(incoming.uri) == f"sip:bob@10.0.0.5:{bob.port}"  # the Contact, as registered
        bob.respond(incoming, 200, tag="nat", body=SDP)
        answer = await alice.expect(200)
        alice.send(alice.in_dialog("ACK", answer, cseq=2, caller_side=True))
        await bob.expect("ACK")
        alice.send(alice.in_dialog("BYE", answer, cseq=3, caller_side=True))
        bye = await bob.expect("BYE")
        bob.respond(bye, 200)
        await alice.expect(200)
        assert [event.state for event in call_events(pbx)][-1] == "ended"


async def test_callee_hangs_up_through_the_route_set(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
        await bob.register()
        await alice.invite("bob")
        incoming = await bob.expect("INVITE")
        bob.respond(incoming, 200, tag="bobtag", body=SDP)
        answer = await alice.expect(200)
        alice.send(alice.in_dialog("ACK", answer, cseq=2, caller_side=True))
        await bob.expect("ACK")
        hang_up = bob.in_dialog("BYE", incoming, cseq=1, caller_side=False, remote_tag="bobtag")
        bob.send(hang_up)
        bye = await alice.expect("BYE")
        assert bye.headers.get("route") is None  # our entry consumed on the way
        assert bye.max_forwards == 69
        alice.respond(bye, 200)
        await bob.expect(200)
        bob.send(hang_up)  # resent (the 200 lost): answered again here, not forwarded again
        await bob.expect(200)
        assert len(alice.received("BYE")) == 1
        [*_, ended] = call_events(pbx)
        assert (ended.state, ended.reason) == ("ended", "callee hung up")


async def test_message_is_forked_and_answered_without_a_call(pbx: Pbx) -> None:
    async with Phone(pbx, "alice") as alice, Phone(pbx, "bob") as bob:
        await bob.register()
        uri = f"sip:bob@{DOMAIN}"
        first = alice.request("MESSAGE", uri, to=f"<{uri}>", call_id="im", cseq=1, body="hi")
        alice.send(first)
        challenge = await alice.expect(407)
        credentials = alice.answer_challenge(challenge, "proxy-authenticate", "MESSAGE", uri)
        alice.send(
            alice.request(
                "MESSAGE",
                uri,
                to=f"<{uri}>",
                call_id="im",
                cseq=2,
                extra=(f"Proxy-Authorization: {credentials}",),
                body="hi",
            )
        )
        incoming = await bob.expect("MESSAGE")
        assert incoming.body == b"hi" and incoming.headers.get("record-route") is None
        bob.respond(incoming, 200, tag="im")
        await alice.expect(200)
        assert call_events(pbx) == []


async def _ring_desk_and_mobile(
    alice: Phone, desk: Phone, mobile: Phone
) -> tuple[Message, Message]:
    """Bob registered from two phones; Alice calls him; both get the INVITE (parallel
    forking, §16.6) and the mobile rings. Returns the INVITE at the desk and at the mobile."""
    await desk.register()
    await mobile.register()
    await alice.invite("bob")
    at_desk = await desk.expect("INVITE")
    on_mobile = await mobile.expect("INVITE")
    mobile.respond(on_mobile, 180, tag="mob")
    return at_desk, on_mobile


async def test_decline_cancels_the_other_contacts_and_wins(pbx: Pbx) -> None:
    async with (
        Phone(pbx, "alice") as alice,
        Phone(pbx, "bob") as desk,
        Phone(pbx, "bob") as mobile,
    ):
        at_desk, on_mobile = await _ring_desk_and_mobile(alice, desk, mobile)
        await alice.expect(180)
        desk.respond(at_desk, 603, tag="desk")  # §16.7: a 6xx ends the search everywhere
        await desk.expect("ACK")
        cancel = await mobile.expect("CANCEL")
        mobile.respond(cancel, 200)
        mobile.respond(on_mobile, 487, tag="mob")
        await mobile.expect("ACK")
        final = await alice.expect(603)
        assert final.to_tag == "desk"
        assert alice.received(487) == []
        [*_, failed] = call_events(pbx)
        assert (failed.state, failed.status) == ("failed", 603)


async def test_callee_on_tcp_is_reached_on_its_own_connection(pbx: Pbx) -> None:
    server = (pbx.listening[0].host, pbx.listening[0].port)
    async with Phone(pbx, "alice") as alice, TcpClient(server) as bob:
        local = f"127.0.0.1:{bob.local[1]}"

        def register(cseq: int, extra: str = "") -> str:
            return (
                "REGISTER sip:pbx.test SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {local};branch={new_branch()}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:bob@pbx.test>;tag=tcp1\r\n"
                f"To: <sip:bob@pbx.test>\r\nCall-ID: tcp-reg\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:bob@{local};transport=tcp>\r\n{extra}Content-Length: 0\r\n\r\n"
            )

        await bob.send(register(1))
        challenge = parse_message(await bob.read_message() or b"", stream=True)
        chosen = pick_challenge(
            parse_auth(value) for value in challenge.headers.get_all("www-authenticate")
        )
        assert chosen is not None
        credentials = build_authorization(chosen, "bob", USERS["bob"], "REGISTER", f"sip:{DOMAIN}")
        await bob.send(register(2, f"Authorization: {credentials}\r\n"))
        registered = parse_message(await bob.read_message() or b"", stream=True)
        assert isinstance(registered, Response) and registered.status == 200

        await alice.invite("bob")
        invite = parse_message(await bob.read_message() or b"", stream=True)
        assert isinstance(invite, Request) and invite.method == "INVITE"
        # UDP caller, TCP callee: one Record-Route per side, the TCP one on top.
        record_route = invite.headers.values("record-route")
        assert len(record_route) == 2 and "transport=tcp" in record_route[0]
        assert "transport=tcp" not in record_route[1]
        ok = make_response(
            invite,
            200,
            to_tag="tcpbob",
            extra=[("Contact", f"<sip:bob@{local};transport=tcp>")]
            + [("Record-Route", value) for value in record_route],
            body=SDP.encode(),
        )
        await bob.send(ok.to_bytes())
        answer = await alice.expect(200)
        alice.send(alice.in_dialog("ACK", answer, cseq=2, caller_side=True))
        ack = parse_message(await bob.read_message() or b"", stream=True)
        assert isinstance(ack, Request) and ack.method == "ACK"
        alice.send(alice.in_dialog("BYE", answer, cseq=3, caller_side=True))
        bye = parse_message(await bob.read_message() or b"", stream=True)
        assert isinstance(bye, Request) and bye.method == "BYE"
        await bob.send(make_response(bye, 200).to_bytes())
        await alice.expect(200)
        assert [event.state for event in call_events(pbx)][-1] == "ended"


async def test_every_2xx_goes_up_and_each_dialog_is_its_own(pbx: Pbx) -> None:
    async with (
        Phone(pbx, "alice") as alice,
        Phone(pbx, "bob") as desk,
        Phone(pbx, "bob") as mobile,
    ):
        at_desk, on_mobile = await _ring_desk_and_mobile(alice, desk, mobile)
        desk.respond(at_desk, 200, tag="desk", body=SDP)
        mobile.respond(on_mobile, 200, tag="mob", body=SDP)  # both picked up at once
        first = await alice.expect(200)
        second = await alice.expect(200)
        assert {first.to_tag, second.to_tag} == {"desk", "mob"}
        await mobile.expect("CANCEL")  # sent on the first 200, too late for this phone
        by_tag = {first.to_tag: first, second.to_tag: second}
        alice.send(alice.in_dialog("ACK", by_tag["desk"], cseq=2, caller_side=True))
        alice.send(alice.in_dialog("ACK", by_tag["mob"], cseq=2, caller_side=True))
        await desk.expect("ACK")
        await mobile.expect("ACK")
        # Hanging up the extra dialog leaves the call up; the answered one ends it.
        alice.send(alice.in_dialog("BYE", by_tag["mob"], cseq=3, caller_side=True))
        mobile.respond(await mobile.expect("BYE"), 200)
        await alice.expect(200)
        assert [call.state for call in pbx.calls()] == ["answered"]
        alice.send(alice.in_dialog("BYE", by_tag["desk"], cseq=3, caller_side=True))
        desk.respond(await desk.expect("BYE"), 200)
        await alice.expect(200)
        assert pbx.calls() == []
        [*_, ended] = call_events(pbx)
        assert (ended.state, ended.reason) == ("ended", "caller hung up")
